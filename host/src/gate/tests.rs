//! The gate without a database: every check in order, the kill switch,
//! deadlines and the journal cap.

use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::Instrument;

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

/// A target named `0`, in scope where `scope.breakers` matches it: the
/// gate asks each target whether the scope covers it.
#[derive(Debug)]
struct Named(String);

impl ActionTarget for Named {
    fn label(&self) -> String {
        format!("t:{}", self.0)
    }

    fn describe(&self) -> String {
        format!("target `{}`", self.0)
    }

    fn check_scope(&self, scope: &Scope, plugin: &str) -> Result<(), String> {
        glob_scope(self, &scope.breakers, &self.0, plugin)
    }
}

fn action(capability: Capability, target: Named) -> Action {
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
    let breaker = || action(Capability::Breaker, Named("stripe".into()));
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
    let notify = action(Capability::Notify, Named("oncall".into()));
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
            action(Capability::Breaker, Named("stripe".into())),
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

/// A backend that declines to act (the target is not as planned) changed
/// nothing: `refused` in the record, not `failed`.
#[tokio::test]
async fn a_backend_that_declines_is_recorded_refused() {
    let g = gate(&KillSwitch::default());
    let r = g
        .act(
            action(Capability::Breaker, Named("stripe".into())),
            Ok(()),
            |(), _| async { Err(BackendError::Refused("moved since the plan".into())) },
        )
        .await;
    assert!(
        matches!(&r, Err(WitError::Refused(m)) if m.contains("moved")),
        "{r:?}"
    );
    let a = g.journal.actions();
    assert_eq!(a[0].applied, Applied::Refused, "{a:?}");
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
                action(Capability::Breaker, Named("x".repeat(10_000))),
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
        action(Capability::Breaker, Named("stripe".into())),
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
/// records and answers, and that nothing ran unless allowed. (What is in
/// scope is the target's own answer; the capabilities test theirs.)
#[tokio::test]
async fn check_table() {
    use crate::guardrails::Plan;
    use Applied::{Denied, Executed, Refused, Simulated};
    use Phase::{Detect, Mitigate};
    let kill = KillSwitch::default();
    let t = |n: &str| Named(n.into());
    let approved: Plan = [PlannedAction {
        kind: ActionKind::CacheDelete,
        target: t("a").label(),
    }]
    .into();
    let approved = Stage::Approved(Arc::new(approved));
    let (normal, plan) = (Stage::Normal, Stage::Plan);
    // (case, phase, dry run, stage, kind, target, recorded, refusal says)
    #[rustfmt::skip]
    let cases = [
        ("live, granted, in scope", Mitigate, false, normal.clone(), ActionKind::CacheDelete, t("a"), Executed, ""),
        ("dry run", Mitigate, true, normal.clone(), ActionKind::CacheDelete, t("a"), Simulated, ""),
        ("interface not granted", Mitigate, false, normal.clone(), ActionKind::DatabaseTerminate, t("a"), Denied, "not granted"),
        ("target out of scope", Mitigate, false, normal.clone(), ActionKind::CacheDelete, t("b"), Denied, "outside the scope"),
        ("denial before phase", Detect, false, normal.clone(), ActionKind::CacheDelete, t("b"), Denied, "outside the scope"),
        ("during detect", Detect, false, normal.clone(), ActionKind::CacheDelete, t("a"), Refused, "not allowed during Detect"),
        ("never simulated, live", Mitigate, false, normal.clone(), ActionKind::CacheFlush, t("a"), Executed, ""),
        ("never simulated, dry run", Mitigate, true, normal.clone(), ActionKind::CacheFlush, t("a"), Refused, "never in a dry run"),
        ("never simulated, planned", Mitigate, true, plan.clone(), ActionKind::CacheFlush, t("a"), Simulated, ""),
        ("in the approved plan", Mitigate, false, approved.clone(), ActionKind::CacheDelete, t("a"), Executed, ""),
        ("outside the approved plan", Mitigate, false, approved.clone(), ActionKind::CacheDelete, t("a2"), Refused, "not in the approved plan"),
        ("same target, other kind", Mitigate, false, approved.clone(), ActionKind::CacheExpire, t("a"), Refused, "not in the approved plan"),
    ];
    let grants = Arc::new(Grants {
        capabilities: [Capability::Cache].into(),
        scope: Scope {
            breakers: Some(vec!["a*".into()]),
            ..Scope::default()
        },
    });
    for (name, phase, dry_run, stage, kind, target, want, says) in cases {
        let run = run_gate(&kill, |r| {
            r.grants = grants.clone();
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
        let executed = want == Executed;
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
            action(Capability::Breaker, Named("stripe".into())),
            none.clone(),
            |(), _| async { Ok(()) },
        )
        .await;
    assert!(matches!(r, Err(WitError::Unavailable(_))));
    let r = g
        .act(
            Action::new(ActionKind::CacheDelete, Named("k".into()), "t"),
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

/// Every host call is a `host_call` span (capability, function, target,
/// outcome, duration) inside the span of its run.
#[tokio::test]
async fn each_action_is_a_host_call_span_inside_the_run_span() {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::registry::LookupSpan;

    type Fields = BTreeMap<String, String>;
    struct Collect<'a>(&'a mut Fields);
    impl Visit for Collect<'_> {
        fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
            self.0
                .insert(f.name().into(), format!("{v:?}").trim_matches('"').into());
        }
    }
    /// A closed span: name, fields, parent's name.
    type Closed = (String, Fields, Option<String>);
    #[derive(Clone, Default)]
    struct Spans(Arc<Mutex<Vec<Closed>>>);
    impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Spans {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let mut f = Fields::new();
            attrs.record(&mut Collect(&mut f));
            ctx.span(id).unwrap().extensions_mut().insert(f);
        }
        fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
            let span = ctx.span(id).unwrap();
            let mut ext = span.extensions_mut();
            values.record(&mut Collect(ext.get_mut::<Fields>().unwrap()));
        }
        fn on_close(&self, id: Id, ctx: Context<'_, S>) {
            let span = ctx.span(&id).unwrap();
            let fields = span.extensions().get::<Fields>().cloned().unwrap();
            let parent = span.parent().map(|p| p.name().to_string());
            let name = span.name().to_string();
            self.0.lock().unwrap().push((name, fields, parent));
        }
    }
    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let g = gate(&KillSwitch::default());
    let run = tracing::info_span!("run", plugin = "p", run_id = "r");
    let _ = g
        .act(
            action(Capability::Breaker, Named("stripe".into())),
            Ok(()),
            |(), _| async { Ok(()) },
        )
        .instrument(run.clone())
        .await;
    let _ = g
        .act(
            Action::new(ActionKind::DatabaseCancel, Named("x".into()), "t"),
            Ok(()),
            |(), _| async { Ok(()) },
        )
        .instrument(run)
        .await;
    let seen = spans.0.lock().unwrap().clone();
    let calls: Vec<_> = seen.iter().filter(|(n, _, _)| n == "host_call").collect();
    assert_eq!(calls.len(), 2, "{seen:?}");
    let (_, f, parent) = calls[0];
    assert_eq!(parent.as_deref(), Some("run"));
    assert_eq!(f["capability"], "breaker");
    assert_eq!(f["function"], "force-state");
    assert_eq!(f["target"], "t:stripe");
    assert_eq!(f["outcome"], "executed");
    assert!(f["duration_ms"].parse::<f64>().unwrap() >= 0.0, "{f:?}");
    let (_, f, _) = calls[1];
    assert_eq!(f["capability"], "database");
    assert_eq!(f["outcome"], "denied", "{f:?}");
}
