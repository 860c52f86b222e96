use crate::record::Trigger;
use crate::service::{Launch, Service};

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
    let toml = format!(
        "[server]\ndata_dir = {:?}\n",
        dir.path().join("data").display().to_string()
    );
    let config =
        crate::config::Config::parse(&toml, &dir.path().join("remedy.toml")).expect("config");
    let service = Service::start(config).await.expect("service");
    let plugin = service
        .registry
        .loaded()
        .into_iter()
        .find(|p| p.name() == "cache-health")
        .expect("the bundled cache-health");
    let launch = Launch {
        id: None,
        trigger: Trigger::Manual {
            by: "size-test".into(),
        },
        mode: None,
        params: Default::default(),
        target: "size-test".into(),
        approved: None,
        waited: false,
    };
    let claimed = match service.claim(plugin, launch) {
        Ok(c) => c,
        Err(rec) => panic!("not claimed: {:?}", rec.status),
    };
    let task = service.run_task(claimed, None);
    let bytes = std::mem::size_of_val(&task);
    assert!(bytes <= 1024, "a queued run's task is {bytes} bytes");
}
