//! Hostile plugins built from source (tests/plugins/): each ends with a
//! precise status and the host keeps serving.

use std::path::Path;
use std::time::{Duration, Instant};

use remedy::config::Config;
use remedy::remedy::{Overrides, PluginError};
use remedy::runtime::LoadError;
use remedy::{Remedy, RunRequest, RunStatus, Trigger};
use remedy_e2e::test_plugin;

fn request(behave: &str) -> RunRequest {
    RunRequest {
        trigger: Trigger::Manual { by: "test".into() },
        dry_run: Some(true),
        params: [("behave".to_string(), behave.to_string())].into(),
        stage: remedy::guardrails::Stage::Normal,
    }
}

fn remedy(toml: &str) -> Remedy {
    Remedy::new(
        Config::parse(toml, Path::new("test.toml")).unwrap(),
        Overrides::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_end_precisely_and_the_host_keeps_serving() {
    // A short deadline for the endless loop only: under a loaded CI machine
    // the other scenarios get the default 2 s.
    let remedy = remedy("[plugins.hostile]\nmemory_mb = 16\n");
    let plugin = remedy
        .load_file(&test_plugin("hostile"))
        .await
        .expect("hostile loads");
    let short = self::remedy("[plugins.hostile]\ntimeout_ms = 300\n");
    let looping = short
        .load_file(&test_plugin("hostile"))
        .await
        .expect("hostile loads");
    let good = |r: &remedy::RunRecord| assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");

    good(&remedy.run(&plugin, request("ok")).await);

    let started = Instant::now();
    let rec = short.run(&looping, request("loop")).await;
    let took = started.elapsed();
    assert_eq!(rec.status, RunStatus::TimedOut, "{rec:#?}");
    assert!(
        took < Duration::from_millis(300 + 400),
        "endless loop took {took:?}"
    );
    assert!(rec.error.as_deref().unwrap().contains("300 ms"), "{rec:#?}");
    good(&remedy.run(&plugin, request("ok")).await);

    let rec = remedy.run(&plugin, request("alloc")).await;
    assert_eq!(rec.status, RunStatus::OutOfMemory, "{rec:#?}");
    assert!(rec.error.as_deref().unwrap().contains("16 MiB"), "{rec:#?}");
    good(&remedy.run(&plugin, request("ok")).await);

    let rec = remedy.run(&plugin, request("panic")).await;
    assert_eq!(rec.status, RunStatus::Trapped, "{rec:#?}");
    assert!(
        rec.error
            .as_deref()
            .unwrap()
            .contains("boom: the disk is on fire"),
        "{rec:#?}"
    );
    good(&remedy.run(&plugin, request("ok")).await);

    let rec = remedy.run(&plugin, request("flood")).await;
    good(&rec);
    let kept: usize = rec.logs.iter().map(String::len).sum();
    assert!(kept <= 64 * 1024 + 4096, "log kept {kept} bytes");
    assert!(
        rec.logs.last().unwrap().contains("bytes of log dropped"),
        "{:?}",
        rec.logs.last()
    );
    good(&remedy.run(&plugin, request("ok")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_loops_do_not_starve_a_good_run() {
    let remedy = std::sync::Arc::new(remedy("[plugins.hostile]\ntimeout_ms = 1000\n"));
    let plugin = std::sync::Arc::new(remedy.load_file(&test_plugin("hostile")).await.unwrap());
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let (r, p) = (remedy.clone(), plugin.clone());
            tokio::spawn(async move { r.run(&p, request("loop")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let rec = remedy.run(&plugin, request("ok")).await;
    assert_eq!(rec.status, RunStatus::Succeeded);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "good run waited {:?} behind spinning guests",
        started.elapsed()
    );
    for s in spinners {
        assert_eq!(s.await.unwrap().status, RunStatus::TimedOut);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_import_fails_to_load_naming_the_interface() {
    let remedy = remedy("");
    let err = match remedy.load_file(&test_plugin("ungranted")).await {
        Err(e) => e,
        Ok(_) => panic!("a plugin importing an ungranted interface loaded"),
    };
    assert!(
        matches!(&err, PluginError::Load { error: LoadError::Ungranted { interface, .. }, .. } if interface.starts_with("remedy:plugin/database")),
        "{err}"
    );
    assert!(err.to_string().contains("remedy:plugin/database"), "{err}");

    // Granted, it loads and its calls reach the (unconfigured) backend.
    let granted = Remedy::new(
        Config::parse(
            "[plugins.ungranted]\ngrants = [\"database\"]\n",
            Path::new("t.toml"),
        )
        .unwrap(),
        Overrides::default(),
    )
    .unwrap();
    let plugin = granted
        .load_file(&test_plugin("ungranted"))
        .await
        .expect("loads when granted");
    let rec = granted.run(&plugin, request("ok")).await;
    assert_eq!(rec.status, RunStatus::Failed);
    assert!(rec.error.unwrap().contains("unavailable"));
}
