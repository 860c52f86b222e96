//! The gate without a database: every check in order, the kill switch,
//! deadlines and the journal cap.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::action::ActionKind;
use crate::grants::{Capability, Scope};
use crate::journal::MAX_ACTIONS;
use crate::killswitch::Pause;

fn run_gate(kill: &KillSwitch, change: impl FnOnce(&mut RunGate)) -> Arc<RunGate> {
    let grants = Arc::new(Grants {
        capabilities: [Capability::Breaker, Capability::Notify].into(),
        scope: Scope {
            breakers: Some(vec!["*".into()]),
            notify_channels: Some(vec!["*".into()]),
            ..Scope::default()
        },
    });
    let mut run = RunGate {
        kill: Some(kill.clone()),
        ..RunGate::new("p", "r", grants, false)
    };
    change(&mut run);
    Arc::new(run)
}

fn gate(kill: &KillSwitch) -> Gate {
    run_gate(kill, |_| ()).call(Phase::Mitigate, None)
}

fn action(capability: Capability, target: Target) -> Action {
    let kind = if capability == Capability::Notify {
        ActionKind::NotifySend
    } else {
        ActionKind::BreakerForceState
    };
    Action::new(kind, target, "test")
}

/// A run that decided to act live before the switch was pulled must not
/// act after it (issue 9, item 2): the gate reads the switch as it is.
#[tokio::test]
async fn the_kill_switch_is_read_at_the_moment_of_the_action() {
    let kill = KillSwitch::default();
    let g = gate(&kill);
    let calls = Arc::new(AtomicUsize::new(0));
    let run = |g: Gate, a: Action| {
        let calls = calls.clone();
        async move {
            g.act(a, Ok(()), |(), _permit| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await
        }
    };
    let breaker = || action(Capability::Breaker, Target::Breaker("stripe".into()));
    assert!(matches!(
        run(g.clone(), breaker()).await,
        Ok(WitApplied::Executed)
    ));
    kill.set(Some(Pause {
        by: "alice".into(),
        at: "2026-11-27T03:00:00Z".into(),
        reason: Some("bad deploy".into()),
    }));
    let err = run(g.clone(), breaker()).await.unwrap_err();
    assert!(
        matches!(&err, WitError::Refused(m) if m.contains("kill switch") && m.contains("alice") && m.contains("bad deploy")),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "nothing ran while paused");
    // Telling humans goes on, and the run says so.
    let notify = action(Capability::Notify, Target::Channel("oncall".into()));
    assert!(matches!(
        run(g.clone(), notify).await,
        Ok(WitApplied::Executed)
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let actions = g.journal.actions();
    assert_eq!(actions[1].applied, Applied::Refused);
    assert!(g
        .journal
        .logs
        .lines()
        .iter()
        .any(|l| l.contains("notifications are not paused")));
    kill.set(None);
    assert!(matches!(run(g, breaker()).await, Ok(WitApplied::Executed)));
}

/// A backend that does not answer before the call's deadline leaves an
/// `unknown` action in the run at once (issue 9, items 9 and 20).
#[tokio::test]
async fn a_backend_silent_past_the_deadline_is_recorded_unknown_in_time() {
    let mut g = gate(&KillSwitch::default());
    g.deadline = Some(tokio::time::Instant::now() + std::time::Duration::from_millis(200));
    let started = std::time::Instant::now();
    let r = g
        .act(
            action(Capability::Breaker, Target::Breaker("stripe".into())),
            Ok(()),
            |(), _| async {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                Ok(())
            },
        )
        .await;
    assert!(started.elapsed() < std::time::Duration::from_millis(1000));
    assert!(
        matches!(&r, Err(WitError::Unavailable(m)) if m.contains("unknown")),
        "{r:?}"
    );
    let a = g.journal.actions();
    assert_eq!(a[0].applied, Applied::Unknown, "{a:?}");
    assert!(a[0].error.as_deref().unwrap().contains("deadline"));
}

/// A plugin calling what it may not in a loop cannot grow its record
/// without bound (issue 9, item 13).
#[tokio::test]
async fn refusals_past_the_cap_are_counted_not_kept() {
    let mut g = gate(&KillSwitch::default());
    g.phase = Phase::Detect;
    for _ in 0..(MAX_ACTIONS + 1000) {
        let _ = g
            .act(
                action(Capability::Breaker, Target::Breaker("x".repeat(10_000))),
                Ok(()),
                |(), _| async { Ok(()) },
            )
            .await;
    }
    let a = g.journal.actions();
    assert_eq!(a.len(), MAX_ACTIONS);
    assert_eq!(g.journal.dropped_actions(), 1000);
    assert!(a[0].target.len() <= 1100, "{}", a[0].target.len());
}

/// If the call is abandoned anyway (its future dropped mid-action), the
/// action is recorded `interrupted` by the drop, not lost.
#[tokio::test]
async fn an_action_abandoned_mid_flight_is_recorded_interrupted() {
    let g = gate(&KillSwitch::default());
    let act = g.act(
        action(Capability::Breaker, Target::Breaker("stripe".into())),
        Ok(()),
        |(), _| std::future::pending::<Result<(), BackendError>>(),
    );
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(100), act)
            .await
            .is_err()
    );
    let a = g.journal.actions();
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].applied, Applied::Interrupted);
    assert!(a[0].error.as_deref().unwrap().contains("unknown"));
}

/// Every check of the gate, in order, without a database: what each case
/// records and answers, and that nothing ran unless allowed.
#[tokio::test]
async fn check_table() {
    use crate::guardrails::Plan;
    let kill = KillSwitch::default();
    let key = |k: &str| Target::CacheKey(k.into());
    let prefix = |p: &str| Target::CachePrefix(p.into());
    let planned = |kind, target: &Target| PlannedAction {
        kind,
        target: target.label(),
    };
    let cache_grants = |flush: Option<bool>| {
        Arc::new(Grants {
            capabilities: [Capability::Cache, Capability::Breaker].into(),
            scope: Scope {
                cache_prefixes: Some(vec!["tenant:acme:".into()]),
                breakers: Some(vec!["stripe".into()]),
                cache_flush: flush,
                ..Scope::default()
            },
        })
    };
    type Case = (
        &'static str,
        Option<bool>,
        Phase,
        bool,
        Stage,
        ActionKind,
        Target,
        Applied,
        &'static str,
    );
    let approved: Plan = [planned(ActionKind::CacheDelete, &key("tenant:acme:1"))].into();
    let approved = Stage::Approved(Arc::new(approved));
    let cases: Vec<Case> = vec![
        (
            "live delete in scope",
            None,
            Phase::Mitigate,
            false,
            Stage::Normal,
            ActionKind::CacheDelete,
            key("tenant:acme:1"),
            Applied::Executed,
            "",
        ),
        (
            "dry-run delete",
            None,
            Phase::Mitigate,
            true,
            Stage::Normal,
            ActionKind::CacheDelete,
            key("tenant:acme:1"),
            Applied::Simulated,
            "",
        ),
        (
            "not granted",
            None,
            Phase::Mitigate,
            false,
            Stage::Normal,
            ActionKind::DatabaseTerminate,
            Target::DatabaseSession {
                pid: 1,
                application: "a".into(),
            },
            Applied::Denied,
            "not granted",
        ),
        (
            "prefix is plain, not a glob",
            None,
            Phase::Mitigate,
            false,
            Stage::Normal,
            ActionKind::CacheDelete,
            key("tenant:acmex:1"),
            Applied::Denied,
            "outside the scope",
        ),
        (
            "breaker outside scope",
            None,
            Phase::Mitigate,
            false,
            Stage::Normal,
            ActionKind::BreakerForceState,
            Target::Breaker("openai".into()),
            Applied::Denied,
            "outside the scope",
        ),
        (
            "during detect",
            None,
            Phase::Detect,
            false,
            Stage::Normal,
            ActionKind::CacheDelete,
            key("tenant:acme:1"),
            Applied::Refused,
            "not allowed during Detect",
        ),
        (
            "flush without cache_flush",
            None,
            Phase::Mitigate,
            false,
            Stage::Normal,
            ActionKind::CacheFlush,
            prefix("tenant:acme:"),
            Applied::Denied,
            "cache_flush = true",
        ),
        (
            "flush live with cache_flush",
            Some(true),
            Phase::Mitigate,
            false,
            Stage::Normal,
            ActionKind::CacheFlush,
            prefix("tenant:acme:"),
            Applied::Executed,
            "",
        ),
        (
            "flush never merely simulated",
            Some(true),
            Phase::Mitigate,
            true,
            Stage::Normal,
            ActionKind::CacheFlush,
            prefix("tenant:acme:"),
            Applied::Refused,
            "never in a dry run",
        ),
        (
            "flush may be planned",
            Some(true),
            Phase::Mitigate,
            true,
            Stage::Plan,
            ActionKind::CacheFlush,
            prefix("tenant:acme:"),
            Applied::Simulated,
            "",
        ),
        (
            "in the approved plan",
            None,
            Phase::Mitigate,
            false,
            approved.clone(),
            ActionKind::CacheDelete,
            key("tenant:acme:1"),
            Applied::Executed,
            "",
        ),
        (
            "outside the approved plan",
            None,
            Phase::Mitigate,
            false,
            approved.clone(),
            ActionKind::CacheDelete,
            key("tenant:acme:2"),
            Applied::Refused,
            "not in the approved plan",
        ),
        (
            "same target, other kind",
            None,
            Phase::Mitigate,
            false,
            approved,
            ActionKind::CacheExpire,
            key("tenant:acme:1"),
            Applied::Refused,
            "not in the approved plan",
        ),
    ];
    for (name, flush, phase, dry_run, stage, kind, target, want, says) in cases {
        let run = run_gate(&kill, |r| {
            r.grants = cache_grants(flush);
            r.dry_run = dry_run;
            r.stage = stage;
        });
        let g = run.call(phase, None);
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = ran.clone();
        let r = g
            .act(Action::new(kind, target, "t"), Ok(()), |(), _| async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await;
        let a = g.journal.actions();
        assert_eq!(a.len(), 1, "{name}: {a:?}");
        assert_eq!(a[0].applied, want, "{name}: {a:?}");
        assert_eq!(a[0].kind, kind, "{name}");
        let executed = want == Applied::Executed;
        assert_eq!(ran.load(Ordering::SeqCst), executed as usize, "{name}");
        match r {
            Ok(_) => assert!(says.is_empty(), "{name}: allowed"),
            Err(e) => assert!(
                error_text(&e).contains(says) && !says.is_empty(),
                "{name}: {e:?}"
            ),
        }
    }
}

/// A refusal before the gate proper (no backend configured) is journaled,
/// and a denial still wins over it.
#[tokio::test]
async fn refusals_without_a_backend_are_journaled() {
    let kill = KillSwitch::default();
    let g = gate(&kill);
    let none: Result<(), WitError> = Err(WitError::Unavailable("no breaker backend".into()));
    let r = g
        .act(
            action(Capability::Breaker, Target::Breaker("stripe".into())),
            none.clone(),
            |(), _| async { Ok(()) },
        )
        .await;
    assert!(matches!(r, Err(WitError::Unavailable(_))));
    let r = g
        .act(
            Action::new(ActionKind::CacheDelete, Target::CacheKey("k".into()), "t"),
            none,
            |(), _| async { Ok(()) },
        )
        .await;
    assert!(matches!(r, Err(WitError::Denied(_))), "{r:?}");
    let a = g.journal.actions();
    assert_eq!(a[0].applied, Applied::Refused);
    assert!(a[0]
        .error
        .as_deref()
        .unwrap()
        .contains("no breaker backend"));
    assert_eq!(a[1].applied, Applied::Denied);
}
