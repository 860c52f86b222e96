use crate::record::Trigger;
use crate::service::{Launch, Service, Started};

fn cache_health(service: &Service) -> std::sync::Arc<crate::runtime::Plugin> {
    service
        .registry
        .loaded()
        .into_iter()
        .find(|p| p.name() == "cache-health")
        .expect("the bundled cache-health")
}

/// A manual run for `target`, in the plugin's own mode (dry by default).
fn manual(target: &str) -> Launch {
    Launch {
        id: None,
        trigger: Trigger::Manual {
            by: "launch-test".into(),
        },
        mode: None,
        params: Default::default(),
        target: target.into(),
        approved: None,
        waited: false,
    }
}

/// A service on the embedded defaults, its store in `dir/data`, with more
/// `[server]` settings from `server`.
async fn service_in(dir: &std::path::Path, server: &str) -> std::sync::Arc<Service> {
    let toml = format!(
        "[server]\ndata_dir = {:?}\n{server}",
        dir.join("data").display().to_string()
    );
    let config = crate::config::Config::parse(&toml, &dir.join("remedy.toml")).expect("config");
    Service::start(config).await.expect("service")
}

/// A manual run of the bundled cache-health for `target`, claimed.
fn claimed(service: &std::sync::Arc<Service>, target: &str) -> super::Claimed {
    match service.claim(cache_health(service), manual(target)) {
        Ok(c) => c,
        Err(rec) => panic!("not claimed: {:?}", rec.status),
    }
}

/// A storm queues thousands of run tasks at once (9,000 in
/// `scripts/alert-storm.py`), each held from its spawn until a slot frees.
/// A queued task weighed about 11.5 KB: the plugin's run (4.2 KB of
/// future) inlined, the claim held three times over, the records of every
/// path. A storm's 9,000 queued runs faulted in ~100 MB of fresh heap while
/// the posts waited for their answers. What follows the slot is now boxed
/// when the slot is given, and the claim boxed at the spawn: 952 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_holds_a_small_task() {
    let dir = tempfile::tempdir().expect("temp dir");
    let service = service_in(dir.path(), "").await;
    let claimed = claimed(&service, "size-test");
    let task = service.run_task(claimed, None);
    let bytes = std::mem::size_of_val(&task);
    assert!(bytes <= 1024, "a queued run's task is {bytes} bytes");
}

/// A run that has ended waits for its record's commit after its slot went
/// to the next run: in a storm thousands wait so. What waits holds the
/// record and the claim (1.8 KB in a test build), not the plugin run's
/// state (14.9 KB, all of which each waiting run held before: see
/// `Service::run_claimed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_for_its_record_holds_no_run_state() {
    let dir = tempfile::tempdir().expect("temp dir");
    let service = service_in(dir.path(), "").await;
    let c = claimed(&service, "size-test");
    let slot = super::Slotted::Waited(service.slot(&c).await);
    let running = service.clone().run_in_slot(c, slot);
    let running_bytes = std::mem::size_of_val(&running);
    let Ok(ran) = running.await else {
        panic!("the run did not start")
    };
    let waiting = service.clone().store_ran(ran);
    let waiting_bytes = std::mem::size_of_val(&waiting);
    eprintln!("running {running_bytes} bytes, waiting for the store {waiting_bytes}");
    assert!(
        waiting_bytes <= 2048 && waiting_bytes * 2 < running_bytes,
        "waiting {waiting_bytes} bytes, running {running_bytes}"
    );
    let rec = waiting.await;
    let stored = service.store.get_run(&rec.id).await.expect("read");
    assert_eq!(
        stored.map(|r| r.status),
        Some(rec.status),
        "the record is stored"
    );
}

/// A dry run that waited for its slot and ends within `RUNNING_AFTER` is
/// written twice, `queued` and finished: a storm's quick runs no longer pay
/// for a `running` record nobody could read in time (a long one is listed
/// `running`: `promises::a_long_dry_run_that_waited_for_its_slot_is_listed_running`).
/// A run that found its slot free is still stored `running` first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_dry_run_that_waited_for_its_slot_writes_no_running_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let service = service_in(dir.path(), "max_concurrent_runs = 1\n").await;
    // Every row the store writes to `runs`, as it writes it.
    let db = rusqlite::Connection::open(data.join("remedy.db")).expect("store file");
    db.execute_batch(
        "CREATE TABLE writes (id TEXT, status TEXT);
         CREATE TRIGGER count_insert AFTER INSERT ON runs
         BEGIN INSERT INTO writes VALUES (NEW.id, NEW.status); END;
         CREATE TRIGGER count_update AFTER UPDATE ON runs
         BEGIN INSERT INTO writes VALUES (NEW.id, NEW.status); END;",
    )
    .expect("counting triggers");
    let plugin = cache_health(&service);
    // The only slot is held: these three wait for it.
    let held = service.try_slot("cache-health").expect("a free slot");
    let mut waited = Vec::new();
    for t in ["a", "b", "c"] {
        match service.launch(plugin.clone(), manual(t)).await {
            Ok(Started::Running { id, handle }) => waited.push((id, handle)),
            _ => panic!("run for {t} not started"),
        }
    }
    drop(held);
    let mut ids = Vec::new();
    for (id, handle) in waited {
        handle.await.expect("run task");
        ids.push(id);
    }
    // This one finds the slot free.
    match service.launch(plugin.clone(), manual("d")).await {
        Ok(Started::Running { id, handle }) => {
            handle.await.expect("run task");
            ids.push(id);
        }
        _ => panic!("run for d not started"),
    }
    let writes: Vec<Vec<String>> = ids
        .iter()
        .map(|id| {
            db.prepare("SELECT status FROM writes WHERE id = ?1 ORDER BY rowid")
                .and_then(|mut st| st.query_map([id], |r| r.get(0))?.collect())
                .expect("writes")
        })
        .collect();
    for w in &writes[..3] {
        assert_eq!(w.len(), 2, "{writes:?}");
        assert_eq!(w[0], "queued", "{writes:?}");
        assert_ne!(w[1], "running", "{writes:?}");
    }
    assert_eq!(writes[3].len(), 2, "{writes:?}");
    assert_eq!(writes[3][0], "running", "{writes:?}");
}
