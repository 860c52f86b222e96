//! The notify capability against a local recording sink: Slack and
//! PagerDuty payloads checked field by field, scope, dry-run, unreachable
//! channels.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use remedy::bindings::remedy::plugin::notify::{Host, Message};
use remedy::bindings::types::{Applied, Error, Severity};
use remedy::capabilities::notify::http::HttpNotify;
use remedy::capabilities::Backends;
use remedy::capabilities::HostCtx;
use remedy::config::{Capability, ChannelConfig, ChannelKind, Scope};
use remedy::gate::{Phase, RunGate};
use remedy::grants::Grants;

mod common;
use common::sink;

fn host(base: &str, dry_run: bool) -> HostCtx {
    std::env::set_var("REMEDY_TEST_PD_KEY", "R0UTINGKEY");
    let ch = |kind, url: String, key: Option<&str>| ChannelConfig {
        kind,
        url: Some(url),
        url_env: None,
        routing_key_env: key.map(String::from),
        acknowledge_on_approval: None,
        resolve_on_verified: None,
        token_env: None,
        dashboard_uid: None,
    };
    let mut channels = BTreeMap::new();
    channels.insert(
        "critical".to_string(),
        ch(ChannelKind::Slack, format!("{base}/slack"), None),
    );
    channels.insert(
        "pager".to_string(),
        ch(
            ChannelKind::Pagerduty,
            format!("{base}/pd"),
            Some("REMEDY_TEST_PD_KEY"),
        ),
    );
    channels.insert(
        "hook".to_string(),
        ch(ChannelKind::Webhook, format!("{base}/hook"), None),
    );
    channels.insert(
        "secret".to_string(),
        ch(ChannelKind::Webhook, format!("{base}/secret"), None),
    );
    channels.insert(
        "down".to_string(),
        ch(ChannelKind::Webhook, "http://127.0.0.1:1/x".into(), None),
    );
    let mut backends = Backends::none();
    backends.notify = Some(Arc::new(
        HttpNotify::new(&channels, Duration::from_secs(2)).unwrap(),
    ));
    let grants = Arc::new(Grants {
        capabilities: [Capability::Notify].into(),
        scope: Scope {
            notify_channels: Some(
                ["critical", "pager", "hook", "down"]
                    .map(String::from)
                    .to_vec(),
            ),
            ..Scope::default()
        },
    });
    let run = Arc::new(RunGate::new("notify-test", "run-42", grants, dry_run));
    HostCtx {
        backends: Arc::new(backends),
        escalation: Arc::default(),
        gate: run.call(Phase::Mitigate, None),
        files: None,
    }
}

fn msg(channel: &str) -> Message {
    Message {
        channel: channel.into(),
        severity: Severity::Critical,
        title: "Stripe breaker stays OPEN".into(),
        body: "Upstream *major outage*; status page update needed".into(),
        evidence: vec![
            ("breaker".into(), "stripe".into()),
            ("indicator".into(), "major".into()),
        ],
    }
}

#[tokio::test]
async fn slack_and_pagerduty_payloads_match_their_formats() {
    let (base, seen) = sink::start().await;
    let mut h = host(&base, false);
    assert_eq!(h.send(msg("critical")).await.unwrap(), Applied::Executed);
    assert_eq!(h.send(msg("pager")).await.unwrap(), Applied::Executed);
    assert_eq!(h.send(msg("hook")).await.unwrap(), Applied::Executed);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);

    let (_, slack) = &seen[0];
    assert_eq!(slack["text"], "[critical] Stripe breaker stays OPEN");
    assert_eq!(slack["blocks"][0]["type"], "header");
    assert_eq!(slack["blocks"][0]["text"]["type"], "plain_text");
    assert!(slack["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap()
        .ends_with("Stripe breaker stays OPEN"));
    assert_eq!(slack["blocks"][1]["type"], "section");
    assert_eq!(slack["blocks"][1]["text"]["type"], "mrkdwn");
    assert_eq!(
        slack["blocks"][1]["text"]["text"],
        "Upstream *major outage*; status page update needed"
    );
    assert_eq!(slack["blocks"][2]["fields"][0]["text"], "*breaker*\nstripe");
    assert_eq!(slack["blocks"][3]["type"], "context");

    let (_, pd) = &seen[1];
    assert_eq!(pd["routing_key"], "R0UTINGKEY");
    assert_eq!(pd["event_action"], "trigger");
    assert_eq!(pd["payload"]["summary"], "Stripe breaker stays OPEN");
    assert_eq!(pd["payload"]["severity"], "critical");
    assert_eq!(pd["payload"]["source"], "remedy/notify-test");
    assert_eq!(
        pd["payload"]["custom_details"]["evidence"]["indicator"],
        "major"
    );
    assert_eq!(pd["payload"]["custom_details"]["run_id"], "run-42");
    assert!(pd["dedup_key"]
        .as_str()
        .unwrap()
        .starts_with("remedy:notify-test:"));

    let (_, hook) = &seen[2];
    assert_eq!(hook["severity"], "critical");
    assert_eq!(hook["evidence"]["breaker"], "stripe");
}

#[tokio::test]
async fn dry_run_scope_and_unreachable_channels() {
    let (base, seen) = sink::start().await;
    let mut dry = host(&base, true);
    assert_eq!(dry.send(msg("critical")).await.unwrap(), Applied::Simulated);
    assert!(seen.lock().unwrap().is_empty(), "dry-run sent something");

    let mut h = host(&base, false);
    assert!(
        matches!(h.send(msg("secret")).await, Err(Error::Denied(_))),
        "channel outside the scope"
    );
    assert!(matches!(
        h.send(msg("nowhere")).await,
        Err(Error::Invalid(_))
    ));
    match h.send(msg("down")).await {
        Err(Error::Unavailable(m)) => assert!(m.contains("notify down"), "{m}"),
        other => panic!("an unreachable channel must be unavailable, got {other:?}"),
    }
    assert!(seen.lock().unwrap().is_empty());
    let applied: Vec<_> = h
        .gate
        .journal
        .actions()
        .iter()
        .map(|a| (a.target.clone(), a.applied))
        .collect();
    use remedy::record::Applied as R;
    assert_eq!(
        applied,
        // A channel that does not exist is refused before the gate, and
        // journaled all the same.
        vec![
            ("channel:secret".into(), R::Denied),
            ("channel:nowhere".into(), R::Refused),
            ("channel:down".into(), R::Failed)
        ]
    );
}

/// The host's follow-ups against the vendors' APIs, through the gate: tried
/// again while rate limited, never with a secret in the error.
#[tokio::test]
async fn follow_ups_ride_out_rate_limits_and_failures_name_the_channel_not_the_token() {
    use remedy::capabilities::notify::backend::{Annotation, FollowUp, NotifyBackend};
    use remedy::capabilities::notify::ChannelTarget;
    use remedy::gate::Action;
    use remedy::record::ActionKind;
    use remedy_e2e::incident_api;

    let pd = incident_api::pagerduty().await;
    let grafana = incident_api::grafana().await;
    std::env::set_var("REMEDY_TEST_FU_PD_KEY", incident_api::ROUTING_KEY);
    std::env::set_var("REMEDY_TEST_FU_GRAFANA", incident_api::GRAFANA_TOKEN);
    std::env::set_var("REMEDY_TEST_FU_WRONG", "glsa_not_the_token_at_all_0000");
    let channel = |kind, url: String, key: Option<&str>, token: Option<&str>| ChannelConfig {
        kind,
        url: Some(url),
        url_env: None,
        routing_key_env: key.map(String::from),
        acknowledge_on_approval: None,
        resolve_on_verified: None,
        token_env: token.map(String::from),
        dashboard_uid: None,
    };
    let channels = BTreeMap::from([
        (
            "pager".to_string(),
            channel(
                ChannelKind::Pagerduty,
                format!("{}/v2/enqueue", pd.base),
                Some("REMEDY_TEST_FU_PD_KEY"),
                None,
            ),
        ),
        (
            "dash".to_string(),
            channel(
                ChannelKind::Grafana,
                format!("{}/", grafana.base),
                None,
                Some("REMEDY_TEST_FU_GRAFANA"),
            ),
        ),
        (
            "wrong".to_string(),
            channel(
                ChannelKind::Grafana,
                grafana.base.clone(),
                None,
                Some("REMEDY_TEST_FU_WRONG"),
            ),
        ),
    ]);
    let n: Arc<dyn NotifyBackend> =
        Arc::new(HttpNotify::new(&channels, Duration::from_secs(2)).unwrap());
    let grants = Arc::new(Grants {
        capabilities: [Capability::Notify].into(),
        scope: Scope {
            notify_channels: Some(vec!["*".into()]),
            ..Scope::default()
        },
    });
    let run = Arc::new(RunGate::new("fu-test", "run-fu", grants, false));
    let gate = run.call(Phase::Mitigate, None);
    let follow_up = |f: FollowUp| {
        let n = n.clone();
        let kind = match f {
            FollowUp::Acknowledge => ActionKind::NotifyAcknowledge,
            FollowUp::Resolve => ActionKind::NotifyResolve,
        };
        let action = Action::new(kind, ChannelTarget("pager".into()), "test")
            .with_incident("remedy:p:fp".into());
        gate.act(action, Ok(n), move |n, permit| async move {
            n.follow_up(&permit, "pager", "remedy:p:fp", f).await
        })
    };
    let last_error = || {
        run.journal
            .actions()
            .last()
            .unwrap()
            .error
            .clone()
            .unwrap_or_default()
    };

    // Two 429s, then PagerDuty takes it: one resolve, after the waits.
    pd.script(vec![429, 429]);
    assert_eq!(
        follow_up(FollowUp::Resolve).await.unwrap(),
        Applied::Executed
    );
    let accepted = pd.accepted();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0]["event_action"], "resolve");
    assert_eq!(
        run.journal.actions()[0].incident.as_deref(),
        Some("remedy:p:fp"),
        "the record keeps the incident"
    );
    // Rate limited past the bound: a failure, not an endless wait.
    pd.script(vec![429, 429, 429, 429]);
    assert!(follow_up(FollowUp::Acknowledge).await.is_err());
    let e = last_error();
    assert!(e.contains("notify pager") && e.contains("429"), "{e}");

    let mark = Annotation {
        at: chrono::Utc::now(),
        text: "Remedy p: breaker.force-state breaker:stripe".into(),
        tags: vec!["remedy".into(), "p".into()],
    };
    let annotate = |ch: &'static str| {
        let (n, mark) = (n.clone(), mark.clone());
        let action = Action::new(ActionKind::NotifyAnnotate, ChannelTarget(ch.into()), "test");
        gate.act(action, Ok(n), move |n, permit| async move {
            n.annotate(&permit, ch, &mark).await
        })
    };
    assert_eq!(annotate("dash").await.unwrap(), Applied::Executed);
    assert_eq!(grafana.accepted().len(), 1);
    // A wrong token: Grafana's 401, the channel named, no token in sight.
    assert!(annotate("wrong").await.is_err());
    let e = last_error();
    assert!(e.contains("notify wrong") && e.contains("401"), "{e}");
    assert!(!e.contains("glsa_"), "{e}");
    // Not a Grafana channel.
    assert!(annotate("pager").await.is_err());
    assert!(
        last_error().contains("no Grafana channel `pager`"),
        "{}",
        last_error()
    );
}
