//! A pair of Alertmanagers in HA sends every payload twice, at about the
//! same time. Whichever copy commits first stores the alerts, and its runs
//! must start: the other copy's alerts are repeats and start nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::guardrails::{Intent, Ledger, Refusal};
use crate::record::{Applied, RunRecord};
use crate::service::Service;
use crate::store::{
    AuditEvent, AuditFilter, HourCount, Orphans, Replica, RunFilter, SqliteStore, Store,
    StoreError, StoredAlert,
};

/// The SQLite store, except that the first payload's commit waits until
/// `release`: the copy that arrived first is overtaken by its twin.
struct FirstReceiptHeld {
    inner: SqliteStore,
    held: AtomicBool,
    entered: Notify,
    release: Notify,
}

#[async_trait::async_trait]
impl Ledger for FirstReceiptHeld {
    async fn intend(&self, intent: Intent) -> Result<i64, Refusal> {
        self.inner.intend(intent).await
    }
    async fn settle(&self, id: i64, applied: Applied, error: Option<String>) {
        self.inner.settle(id, applied, error).await
    }
}

#[async_trait::async_trait]
impl Store for FirstReceiptHeld {
    fn healthy(&self) -> bool {
        self.inner.healthy()
    }
    async fn put_run(&self, rec: &RunRecord) -> Result<(), StoreError> {
        self.inner.put_run(rec).await
    }
    async fn audit(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.inner.audit(event).await
    }
    async fn receive(
        &self,
        items: Vec<(StoredAlert, &[RunRecord])>,
    ) -> Result<Vec<bool>, StoreError> {
        if !self.held.swap(true, Ordering::SeqCst) {
            self.entered.notify_one();
            self.release.notified().await;
        }
        self.inner.receive(items).await
    }
    async fn decide(&self, rec: &RunRecord, approvals_before: usize) -> Result<bool, StoreError> {
        self.inner.decide(rec, approvals_before).await
    }
    async fn prune(&self, before: &str, ledger_before: &str) -> Result<bool, StoreError> {
        self.inner.prune(before, ledger_before).await
    }
    async fn put_setting(&self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        self.inner.put_setting(key, value).await
    }
    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.setting(key).await
    }
    async fn settings_under(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.settings_under(prefix).await
    }
    async fn set_pause(&self, pause: Option<crate::killswitch::Pause>) -> Result<(), StoreError> {
        self.inner.set_pause(pause).await
    }
    async fn pause(&self) -> Result<Option<crate::killswitch::Pause>, StoreError> {
        self.inner.pause().await
    }
    async fn runs_for_alerts(
        &self,
        keys: &[crate::store::AlertKey],
    ) -> Result<Vec<Vec<RunRecord>>, StoreError> {
        self.inner.runs_for_alerts(keys).await
    }
    async fn take_over(&self) -> Result<Orphans, StoreError> {
        self.inner.take_over().await
    }
    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.inner.get_run(id).await
    }
    async fn list_runs(&self, f: RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        self.inner.list_runs(f).await
    }
    async fn list_alerts(&self, limit: u32) -> Result<Vec<StoredAlert>, StoreError> {
        self.inner.list_alerts(limit).await
    }
    async fn list_audit(&self, f: AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.list_audit(f).await
    }
    async fn run_counts(&self, since: &str) -> Result<Vec<HourCount>, StoreError> {
        self.inner.run_counts(since).await
    }
    async fn budget_used(
        &self,
        plugin: &str,
        kind: crate::action::ActionKind,
        per: std::time::Duration,
    ) -> Result<u32, StoreError> {
        self.inner.budget_used(plugin, kind, per).await
    }
}

fn payload() -> super::Webhook {
    super::parse(
        br#"{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"Twin","service":"api"},"startsAt":"2026-11-28T03:00:00Z","fingerprint":"twin-1"}]}"#,
    )
    .unwrap()
}

/// A service with cache-health taking `Twin` alerts, on a store whose
/// first receipt waits for `release`.
async fn service(dir: &std::path::Path) -> (Arc<Service>, Arc<FirstReceiptHeld>) {
    let data = dir.join("data");
    let toml = format!(
        "[server]\ndata_dir = {:?}\n[plugins.cache-health]\nalerts = [\"Twin\"]\n",
        data.display().to_string()
    );
    let config = crate::config::Config::parse(&toml, &dir.join("remedy.toml")).unwrap();
    let store = Arc::new(FirstReceiptHeld {
        inner: SqliteStore::open(&data).unwrap(),
        held: AtomicBool::new(false),
        entered: Notify::new(),
        release: Notify::new(),
    });
    let me = Replica::new("twins".into(), std::time::Duration::from_secs(10));
    let service = Service::start_on(config, store.clone(), me).await.unwrap();
    (service, store)
}

/// The first copy reaches the store first but commits second. Before, it
/// had claimed the alert's target as it arrived, so its twin found the
/// target in flight and stored the alert with a `skipped` run; the first
/// copy then turned out a repeat and dropped its claim. The alert was
/// never handled (until Alertmanager's next repeat, hours later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_twin_that_commits_first_starts_the_run_whichever_arrived_first() {
    let dir = tempfile::tempdir().unwrap();
    let (service, store) = service(dir.path()).await;

    let first = tokio::spawn({
        let service = service.clone();
        async move { super::receive(&service, payload()).await.unwrap() }
    });
    store.entered.notified().await;
    let twin = super::receive(&service, payload()).await.unwrap();
    store.release.notify_one();
    let first = first.await.unwrap();

    assert_eq!((twin.new, twin.duplicates), (1, 0));
    assert_eq!(twin.runs.len(), 1);
    assert_eq!(twin.runs[0].status, "queued", "{:?}", twin.runs);
    assert_eq!((first.new, first.duplicates), (0, 1));
    assert!(first.runs.is_empty(), "{:?}", first.runs);
    let key = crate::store::AlertKey {
        plugin: "cache-health".into(),
        fingerprint: "twin-1".into(),
        starts_at: "2026-11-28T03:00:00Z".into(),
    };
    let stored = service
        .store
        .runs_for_alerts(&[key])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].status, crate::record::RunStatus::Skipped);
}

/// HA twins repeat an alert together: one retries, the other finds the
/// retry in flight and leaves a `skipped` run. Those never ran: counted as
/// attempts, three of them and one real failure made Remedy give up after
/// a single attempt; the newest of them hid the retry still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_neither_counts_nor_is_judged_by_skipped_runs() {
    use crate::record::RunStatus as S;
    use crate::service::verify::Repeat;
    let dir = tempfile::tempdir().unwrap();
    let (service, _) = service(dir.path()).await;
    let plugin = service
        .registry
        .loaded()
        .into_iter()
        .find(|p| p.name() == "cache-health")
        .unwrap();
    let alert = &payload().alerts[0];
    let run = |status: S, ago_s: i64| {
        let mut r = crate::service::queued_record(&plugin, &super::alert_launch(&plugin, alert));
        r.status = status;
        r.started_at -= chrono::Duration::seconds(ago_s);
        r.finished_at = Some(r.started_at);
        r
    };
    // One failure an hour ago (its backoff long passed), three twins'
    // `skipped` since: one attempt, so a retry.
    let runs = vec![
        run(S::Skipped, 0),
        run(S::Skipped, 1),
        run(S::Skipped, 2),
        run(S::Trapped, 3600),
    ];
    assert_eq!(
        service.on_repeat(&plugin, runs, "twin-1").await,
        Repeat::Retry
    );
    // A retry still running behind its twin's `skipped`: nothing.
    let runs = vec![
        run(S::Skipped, 0),
        run(S::Running, 1),
        run(S::Trapped, 3600),
    ];
    assert_eq!(
        service.on_repeat(&plugin, runs, "twin-1").await,
        Repeat::Nothing
    );
    // Only skipped runs: none ever ran, so a retry.
    assert_eq!(
        service
            .on_repeat(&plugin, vec![run(S::Skipped, 0)], "twin-1")
            .await,
        Repeat::Retry
    );
}
