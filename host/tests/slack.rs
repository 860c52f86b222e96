//! Slack: plans posted with buttons, decisions by signed interactions, the
//! kill switch by slash command, two-person approval — against a local
//! Slack Web API that checks the documented request shapes
//! (`remedy_e2e::slack_api`), with requests signed as Slack signs them.

use std::time::Duration;

use remedy::chat::slack::signing::sign;
use remedy_e2e::slack_api::{Answer, FakeSlack, BOT_TOKEN};
use serde_json::json;

mod common;
use common::*;
#[path = "slack/interact.rs"]
mod interact;
use interact::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alerts_plan_is_approved_in_slack_and_its_thread_tells_the_rest() {
    let fake = FakeSlack::start().await;
    let StuckBreaker { dir, sim, server } = serve(&fake, "", "verify_after = \"300ms\"").await;
    let (code, r) = server
        .post(
            "/v1/alerts",
            payload(vec![alert(
                "CircuitBreakerOpen",
                "firing",
                json!({"breaker": "stripe", "severity": "critical", "service": "payments"}),
                "fp-slack-e2e",
                "2026-12-07T00:00:00Z",
            )]),
        )
        .await;
    assert_eq!(code, 202, "{r}");
    let id = r["runs"][0]["run_id"].as_str().unwrap().to_string();
    let (ts, value) = posted_plan(&fake, &id).await;
    let (_, message) = fake.messages().into_iter().find(|(t, _)| *t == ts).unwrap();
    let text = message_text(&message);
    for needle in [
        "circuit-breaker-open",
        "CircuitBreakerOpen",
        "breaker=stripe",
        "breaker.force-state",
        "breaker:stripe",
        "http://remedy.example.test/runs/",
        "Waiting",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    assert_eq!(message["channel"], CHANNEL);
    let rec = server.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(
        value,
        format!("{id} {}", rec["plugin_digest"].as_str().unwrap())
    );
    assert_eq!(
        sim.breaker_state("stripe").unwrap(),
        "OPEN",
        "nothing acted yet"
    );

    let (code, body) = press(&server, ALICE, "remedy.approve", &value).await;
    assert_eq!(code, 200, "{body}");
    let live = live_run_of(&server, &id).await;
    let rec = server.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(rec["approval"]["decided_by"], format!("slack:{ALICE}"));
    let done = server.succeeded(&live, "the live run", 20).await;
    assert_eq!(
        actions_on(&done, "breaker:stripe")[0]["applied"],
        "executed",
        "{done}"
    );
    assert_eq!(sim.breaker_state("stripe").unwrap(), "HALF_OPEN");

    // The message lost its buttons and says who; the thread tells the rest.
    let thread = eventually(
        "the thread tells decision, actions, verification",
        20,
        || async {
            let t = fake.thread(&ts);
            (t.iter().any(|l| l.contains("Verification"))).then_some(t)
        },
    )
    .await;
    let all = thread.join("\n");
    assert!(all.contains(&format!("Approved by <@{ALICE}>")), "{all}");
    assert!(
        all.contains("`breaker.force-state` on `breaker:stripe`: executed"),
        "{all}"
    );
    assert!(
        all.contains(&format!("http://remedy.example.test/v1/runs/{live}/report")),
        "{all}"
    );
    assert!(all.contains("*resolved*"), "{all}");
    let (_, now) = fake.messages().into_iter().find(|(t, _)| *t == ts).unwrap();
    let now = message_text(&now);
    assert!(!now.contains("remedy.approve"), "buttons gone: {now}");
    assert!(now.contains(&format!("Approved* by <@{ALICE}>")), "{now}");
    assert_eq!(fake.ephemerals(ALICE).len(), 1, "the presser is told");
    // Exactly one plan message, never a second.
    assert_eq!(fake.messages().len(), 1);

    // Neither secret is in any record, audit event, report or log line.
    let log = std::fs::read_to_string(dir.path().join("remedy.log")).unwrap();
    let records = server.get("/v1/runs?limit=100").await.to_string();
    let audit = server.get("/v1/audit?limit=1000").await.to_string();
    let (_, report) = server.get_as("", &format!("/v1/runs/{live}/report")).await;
    for secret in [BOT_TOKEN, SECRET] {
        for (what, text) in [
            ("log", &log),
            ("records", &records),
            ("audit", &audit),
            ("report", &report),
        ] {
            assert!(!text.contains(secret), "a secret is in the {what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_replayed_altered_and_unentitled_presses_are_refused_and_audited() {
    let fake = FakeSlack::start().await;
    let StuckBreaker {
        dir: _dir,
        sim,
        server,
    } = serve(&fake, "", "").await;
    let id = plan(&server).await;
    let (_, value) = posted_plan(&fake, &id).await;
    let body = press_body(ALICE, "remedy.approve", &value);
    let ts = now();
    let good = sign(SECRET.as_bytes(), &ts.to_string(), body.as_bytes());

    // Forged: signed with another secret.
    let forged = sign(b"not-the-secret", &ts.to_string(), body.as_bytes());
    assert_eq!(send(&server, &body, ts, &forged).await.0, 401);
    // Stale: signed six minutes ago (correctly).
    let old = ts - 360;
    let stale = sign(SECRET.as_bytes(), &old.to_string(), body.as_bytes());
    let (code, why) = send(&server, &body, old, &stale).await;
    assert_eq!(code, 401);
    assert!(why.contains("replay"), "{why}");
    // Altered after signing: another user put in.
    let altered = body.replace(ALICE, BOB);
    assert_eq!(send(&server, &altered, ts, &good).await.0, 401);
    // Unsigned.
    let r = server
        .http
        .post(format!("{}/v1/slack/interactions", server.base))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A reader and a stranger press Approve: taken (Slack needs a 200),
    // refused, audited, and told.
    assert_eq!(
        press(&server, READER, "remedy.approve", &value).await.0,
        200
    );
    assert_eq!(
        press(&server, STRANGER, "remedy.approve", &value).await.0,
        200
    );
    eventually("the refused are told", 10, || async {
        (fake.ephemerals(READER).len() == 1 && fake.ephemerals(STRANGER).len() == 1).then_some(())
    })
    .await;
    assert!(fake.ephemerals(READER)[0].contains("not one of Remedy's approvers"));
    // A button of another plan's code (a forged value) decides nothing.
    let other = format!("{id} sha256:{}", "0".repeat(64));
    assert_eq!(press(&server, ALICE, "remedy.approve", &other).await.0, 200);
    eventually("the presser is told why not", 10, || async {
        fake.ephemerals(ALICE)
            .iter()
            .any(|t| t.contains("the button was made for"))
            .then_some(())
    })
    .await;

    // Forged, stale, altered, unsigned, the reader, the stranger, the
    // other code's button: each audited with its reason.
    let refused = audit_of(&server, "slack.refused").await;
    let reasons: Vec<String> = refused
        .iter()
        .map(|e| e["detail"]["reason"].to_string())
        .collect();
    assert_eq!(refused.len(), 7, "{reasons:?}");
    for why in [
        "does not match",
        "replay",
        "no X-Slack-Request-Timestamp",
        "not an approver",
        "the button was made for",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(why)),
            "{why}: {reasons:?}"
        );
    }
    let rec = server.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(rec["status"], "pending_approval", "{rec}");
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");

    // The good request goes through once; the same request again is a replay.
    let (code, _) = send(&server, &body, ts, &good).await;
    assert_eq!(code, 200);
    let (code, why) = send(&server, &body, ts, &good).await;
    assert_eq!(code, 401);
    assert!(why.contains("replay"), "{why}");
    status_becomes(&server, &id, "succeeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_click_decides_once() {
    let fake = FakeSlack::start().await;
    let StuckBreaker {
        dir: _dir,
        sim: _sim,
        server,
    } = serve(&fake, "", "verify_after = \"1h\"").await;
    let id = plan(&server).await;
    let (ts, value) = posted_plan(&fake, &id).await;
    let (a, b) = tokio::join!(
        press(&server, ALICE, "remedy.approve", &value),
        press(&server, ALICE, "remedy.approve", &value)
    );
    assert_eq!((a.0, b.0), (200, 200));
    let told = eventually("both presses answered", 10, || async {
        let t = fake.ephemerals(ALICE);
        (t.len() == 2).then_some(t)
    })
    .await;
    assert_eq!(
        told.iter().filter(|t| t.starts_with("Approved")).count(),
        1,
        "{told:?}"
    );
    let runs = server.get("/v1/runs?limit=100").await["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["approval_of"] == id.as_str())
        .count();
    assert_eq!(runs, 1, "one live run");
    let approved = audit_of(&server, "approval.approved").await;
    assert_eq!(approved.len(), 1);
    eventually("the thread says it once", 10, || async {
        (fake
            .thread(&ts)
            .iter()
            .filter(|l| l.starts_with("Approved by"))
            .count()
            == 1)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_must_approve_and_the_requester_is_not_one_of_them() {
    let fake = FakeSlack::start().await;
    let StuckBreaker {
        dir: _dir,
        sim,
        mut server,
    } = serve(
        &fake,
        TOKENS,
        "approvals_required = 2\nverify_after = \"1h\"",
    )
    .await;
    server.token = Some("run-token-0123456789".into());
    let id = plan(&server).await;
    let (ts, value) = posted_plan(&fake, &id).await;
    let path = format!("/v1/runs/{id}/approve");

    // The requester (ops-runner, who may approve) cannot be one of two.
    let (code, e) = server.post(&path, json!({})).await;
    assert_eq!(code, 403, "{e}");
    assert_eq!(e["error"]["code"], "own_request");

    // First approval, in Slack: counted, still pending, the message says so.
    press(&server, BOB, "remedy.approve", &value).await;
    eventually("the message shows 1 of 2", 10, || async {
        let (_, m) = fake.messages().into_iter().find(|(t, _)| *t == ts)?;
        message_text(&m)
            .contains(&format!("1 of 2 approvals, by slack:{BOB}"))
            .then_some(())
    })
    .await;
    let rec = server.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(rec["status"], "pending_approval", "{rec}");
    assert_eq!(
        rec["approval"]["approvals"][0]["by"],
        format!("slack:{BOB}")
    );
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
    // The same person again does not make two.
    press(&server, BOB, "remedy.approve", &value).await;
    eventually("Bob is told it counts already", 10, || async {
        fake.ephemerals(BOB)
            .iter()
            .any(|t| t.contains("counted already"))
            .then_some(())
    })
    .await;
    let rec = server.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(rec["approval"]["approvals"].as_array().unwrap().len(), 1);
    // The console shows it too.
    let (code, page) = server
        .get_as("alice-token-0123456789", &format!("/runs/{id}"))
        .await;
    assert_eq!(code, 200);
    assert!(
        page.contains(&format!("1 of 2 approvals, by slack:{BOB}")),
        "{page}"
    );

    // The second person (by the API) runs it.
    let (code, r) = server
        .post_as("alice-token-0123456789", &path, json!({}))
        .await;
    assert_eq!(code, 202, "{r}");
    let live = r["live_run"].as_str().unwrap();
    server.succeeded(live, "the live run", 20).await;
    assert_eq!(sim.breaker_state("stripe").unwrap(), "HALF_OPEN");
    let rec = server.get(&format!("/v1/runs/{id}")).await;
    let by: Vec<&str> = rec["approval"]["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["by"].as_str().unwrap())
        .collect();
    assert_eq!(by, [format!("slack:{BOB}").as_str(), "alice"]);
    eventually("the message says both", 10, || async {
        let (_, m) = fake.messages().into_iter().find(|(t, _)| *t == ts)?;
        message_text(&m)
            .contains(&format!("<@{BOB}> and alice"))
            .then_some(())
    })
    .await;

    // Any rejection ends a plan, however many approved before.
    sim.open_breaker("stripe");
    let id2 = plan(&server).await;
    let (_, value2) = posted_plan(&fake, &id2).await;
    let (code, _) = server
        .post_as(
            "alice-token-0123456789",
            &format!("/v1/runs/{id2}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "counted, not run");
    press(&server, BOB, "remedy.reject", &value2).await;
    status_becomes(&server, &id2, "rejected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_rate_limiting_or_down_leaves_the_plan_decidable_and_posts_it_once() {
    let fake = FakeSlack::start().await;
    // Two 429s, then Slack takes it: one message, posted after the waits.
    fake.script(
        "chat.postMessage",
        vec![Answer::RateLimited(1), Answer::RateLimited(1)],
    );
    let StuckBreaker {
        dir: _dir,
        sim: _sim,
        server,
    } = serve(&fake, "", "verify_after = \"1h\"").await;
    let id = plan(&server).await;
    posted_plan(&fake, &id).await;
    assert_eq!(fake.received("chat.postMessage").len(), 3);
    assert_eq!(fake.messages().len(), 1);

    // Slack answers, but too late (past the client's timeout): it did post,
    // so the post is not sent again; the plan is decidable in the API.
    fake.script(
        "chat.postMessage",
        vec![Answer::Stall(Duration::from_secs(8))],
    );
    let id2 = plan(&server).await;
    eventually("the post is given up", 15, || async {
        let failed = audit_of(&server, "slack.failed").await;
        failed
            .iter()
            .any(|e| e["run_id"] == id2.as_str())
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let posts = fake
        .received("chat.postMessage")
        .into_iter()
        .filter(|c| c.body.to_string().contains(&id2))
        .count();
    assert_eq!(posts, 1, "sent once, never again");
    // Refused outright (a channel the bot is not in): not retried.
    fake.script("chat.postMessage", vec![Answer::Refuse("not_in_channel")]);
    let id3 = plan(&server).await;
    eventually("the refusal is audited", 15, || async {
        let failed = audit_of(&server, "slack.failed").await;
        failed
            .iter()
            .any(|e| {
                e["run_id"] == id3.as_str()
                    && e["detail"]["error"]
                        .as_str()
                        .is_some_and(|t| t.contains("not_in_channel"))
            })
            .then_some(())
    })
    .await;
    for plan in [&id2, &id3] {
        let (code, r) = server
            .post(&format!("/v1/runs/{plan}/approve"), json!({}))
            .await;
        assert_eq!(code, 202, "decidable without Slack: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_answers_to_slash_commands_by_role() {
    let fake = FakeSlack::start().await;
    let StuckBreaker {
        dir: _dir,
        sim: _sim,
        server,
    } = serve(&fake, "", "").await;
    let id = plan(&server).await;

    let (code, r) = slash(&server, READER, "pause because").await;
    assert_eq!(code, 200);
    assert_eq!(r["response_type"], "ephemeral");
    assert!(
        r["text"].as_str().unwrap().contains("needs approvers"),
        "{r}"
    );
    assert!(server.get("/v1/admin/pause").await["paused"].is_null());
    let (_, r) = slash(&server, STRANGER, "status").await;
    assert!(r["text"].as_str().unwrap().contains("may not"), "{r}");

    let (_, r) = slash(&server, ALICE, "pause payments deploy going wrong").await;
    assert_eq!(r["response_type"], "in_channel", "{r}");
    assert!(
        r["text"]
            .as_str()
            .unwrap()
            .contains(&format!("paused by <@{ALICE}>")),
        "{r}"
    );
    let p = server.get("/v1/admin/pause").await;
    assert_eq!(p["paused"]["by"], format!("slack:{ALICE}"));
    assert_eq!(p["paused"]["reason"], "payments deploy going wrong");

    let (_, r) = slash(&server, READER, "status").await;
    let text = r["text"].as_str().unwrap();
    assert!(
        text.contains("*Paused*") && text.contains("payments deploy going wrong"),
        "{text}"
    );
    assert!(
        text.contains("Plans waiting for approval: 1") && text.contains(&id),
        "{text}"
    );

    let (_, r) = slash(&server, BOB, "resume").await;
    assert!(r["text"].as_str().unwrap().contains("resumed"), "{r}");
    assert!(server.get("/v1/admin/pause").await["paused"].is_null());
    let (_, r) = slash(&server, READER, "").await;
    assert!(r["text"].as_str().unwrap().contains("*Acting*"), "{r}");
    let (_, r) = slash(&server, READER, "frobnicate").await;
    assert!(r["text"].as_str().unwrap().contains("/remedy pause"), "{r}");

    let refused = audit_of(&server, "slack.refused").await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    let changes = audit_of(&server, "admin.paused").await;
    assert_eq!(changes[0]["detail"]["by"], format!("slack:{ALICE}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvers_pressing_at_once_on_two_replicas_both_count_and_it_runs_once() {
    let fake = FakeSlack::start().await;
    let db = Db::new("slack_two").await;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    sim.open_breaker("stripe");
    let slack = slack_section(&fake, "");
    let cluster = PgCluster {
        dir: dir.path(),
        db: &db,
        sim: &sim,
        lease: "3s",
        server: "",
        plugin: "mode = \"approve\"\napprovals_required = 2\nverify_after = \"1h\"",
        tail: &slack,
    };
    let replica = |name: &str| cluster.replica(name, &ENV);
    let a = replica("a");
    let b = replica("b");
    let id = plan(&a).await;
    let (ts, value) = posted_plan(&fake, &id).await;
    let (x, y) = tokio::join!(
        press(&a, ALICE, "remedy.approve", &value),
        press(&b, BOB, "remedy.approve", &value)
    );
    assert_eq!((x.0, y.0), (200, 200));
    let live = eventually("approved by both", 15, || async {
        let rec = a.get(&format!("/v1/runs/{id}")).await;
        rec["approval"]["live_run"].as_str().map(String::from)
    })
    .await;
    b.succeeded(&live, "the live run", 20).await;
    let rec = a.get(&format!("/v1/runs/{id}")).await;
    let mut by: Vec<String> = rec["approval"]["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["by"].as_str().unwrap().to_string())
        .collect();
    by.sort();
    assert_eq!(by, [format!("slack:{ALICE}"), format!("slack:{BOB}")]);
    let live_runs = db
        .one(&format!(
            "SELECT count(*) FROM runs WHERE record::jsonb ->> 'approval_of' = '{id}'"
        ))
        .await;
    assert_eq!(live_runs, 1);
    let executed = db
        .one("SELECT count(*) FROM actions WHERE kind = 'breaker.force-state' AND status = 'executed'")
        .await;
    assert_eq!(executed, 1);
    // One plan message, updated by whichever replica decided.
    eventually("the message says both", 10, || async {
        let (_, m) = fake.messages().into_iter().find(|(t, _)| *t == ts)?;
        let t = message_text(&m);
        (t.contains("Approved*") && !t.contains("remedy.approve")).then_some(())
    })
    .await;
    assert_eq!(fake.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_while_paused_decides_nothing_and_an_expired_plan_loses_its_buttons() {
    let fake = FakeSlack::start().await;
    let StuckBreaker {
        dir: _dir,
        sim,
        server,
    } = serve(&fake, "", "approval_ttl = \"3s\"").await;
    let id = plan(&server).await;
    let (ts, value) = posted_plan(&fake, &id).await;

    // Paused from the channel: Approve is refused, audited and told.
    let (_, r) = slash(&server, ALICE, "pause db failover").await;
    assert_eq!(r["response_type"], "in_channel", "{r}");
    assert_eq!(press(&server, BOB, "remedy.approve", &value).await.0, 200);
    let told = eventually("the presser is told why not", 10, || async {
        fake.ephemerals(BOB).into_iter().next()
    })
    .await;
    assert!(
        told.starts_with("Not done") && told.contains("kill switch is on"),
        "{told}"
    );
    let refused = audit_of(&server, "slack.refused").await;
    assert!(
        refused[0]["detail"]["reason"]
            .to_string()
            .contains("kill switch is on"),
        "{refused:?}"
    );
    let rec = server.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(rec["status"], "pending_approval", "{rec}");
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
    slash(&server, ALICE, "resume").await;

    // Nobody decided in time: the message says so, and has no buttons.
    let message = eventually("the message says expired", 15, || async {
        let (_, m) = fake.messages().into_iter().find(|(t, _)| *t == ts)?;
        message_text(&m).contains("Expired").then_some(m)
    })
    .await;
    assert!(
        !message_text(&message).contains("remedy.approve"),
        "{message}"
    );
    status_becomes(&server, &id, "expired").await;
    // A late press on an old copy of the message decides nothing.
    press(&server, ALICE, "remedy.approve", &value).await;
    let told = eventually("the late presser is told", 10, || async {
        fake.ephemerals(ALICE).into_iter().next()
    })
    .await;
    assert!(told.starts_with("Not done"), "{told}");
    assert_eq!(sim.breaker_state("stripe").unwrap(), "OPEN");
}
