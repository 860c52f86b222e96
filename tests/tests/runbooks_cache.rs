//! The cache runbooks (cache-health, idempotency-keys) against the real
//! Redis, each test under its own key prefix, with servio-sim's hit rate
//! scraped by a real Prometheus.

mod common;

use common::world::*;
use common::*;
use redis::AsyncCommands;
use remedy::record::Applied;
use remedy::RunStatus;

const HIT_RATE: &str = "sum(rate(servio_cache_requests_total{result=\"hit\"}[3s])) / sum(rate(servio_cache_requests_total[3s]))";

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("the tests need Redis at 127.0.0.1:6379")
}

/// Deletes every key of this test (its prefix is unique).
async fn clean(prefix: &str) {
    let mut r = redis().await;
    let keys: Vec<String> = r.keys(format!("{prefix}*")).await.unwrap();
    if !keys.is_empty() {
        let _: () = r.del(keys).await.unwrap();
    }
}

async fn exists(key: &str) -> bool {
    redis().await.exists(key).await.unwrap()
}

/// `prefix` is the application's key space; the scope may be narrower.
fn cache_health(prefix: &str, scope: &str, extra: &str) -> String {
    format!(
        "config = {{ window = \"{WINDOW}\", key_prefix = \"{prefix}\"{extra} }}\nscope = {{ cache_prefixes = [\"{scope}\"] }}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_isolated_keys_are_deleted_live_only_and_only_inside_the_scope() {
    let w = world().await;
    let p = format!("{}:servio:", unique("ch"));
    let mut r = redis().await;
    let _: () = r.set(format!("{p}tenant:acme:menu"), "1").await.unwrap();
    let _: () = r.set(format!("{p}tenant:globex:menu"), "1").await.unwrap();
    let remedy_ = remedy(&w.config("cache-health", &cache_health(&p, &p, "")));
    let plugin = remedy_.load_named("cache-health").await.unwrap();
    w.prom.wait_until(HIT_RATE, |v| v > 0.9).await;
    assert!(healthy(&remedy_.run(&plugin, manual(false)).await));

    // Keys without a tenant: one tenant's data can reach another.
    let _: () = r.set(format!("{p}menu"), "1").await.unwrap();
    let _: () = r.set(format!("{p}tenant::menu"), "1").await.unwrap();
    let dry = remedy_.run(&plugin, manual(true)).await;
    assert!(!healthy(&dry));
    assert_eq!(dry.actions.len(), 2, "{dry:#?}");
    assert!(dry.actions.iter().all(|a| a.applied == Applied::Simulated));
    assert!(exists(&format!("{p}menu")).await, "dry-run deletes nothing");

    let live = remedy_.run(&plugin, manual(false)).await;
    assert_eq!(live.status, RunStatus::Succeeded, "{live:#?}");
    assert!(live.outcome.as_ref().unwrap().mitigated, "{live:#?}");
    assert!(!exists(&format!("{p}menu")).await);
    assert!(!exists(&format!("{p}tenant::menu")).await);
    assert!(
        exists(&format!("{p}tenant:acme:menu")).await,
        "isolated keys stay"
    );
    assert!(healthy(&remedy_.run(&plugin, manual(false)).await));

    // Audit a wider key space than the scope: keys outside it are denied.
    let wide = p.trim_end_matches("servio:").to_string();
    let _: () = r.set(format!("{wide}other"), "1").await.unwrap();
    let remedy_ = remedy(&w.config("cache-health", &cache_health(&wide, &p, "")));
    let plugin = remedy_.load_named("cache-health").await.unwrap();
    let live = remedy_.run(&plugin, manual(false)).await;
    let denied = actions_on(&live, &format!("key:{wide}other"));
    assert_eq!(denied[0].applied, Applied::Denied, "{live:#?}");
    assert!(exists(&format!("{wide}other")).await);
    clean(&wide).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flush_needs_auto_mode_and_an_explicit_grant() {
    let w = world().await;
    let p = format!("{}:servio:", unique("flush"));
    let mut r = redis().await;
    for i in 0..50 {
        let _: () = r.set(format!("{p}tenant:t{i}:menu"), "1").await.unwrap();
    }
    w.sim.set_cache_hit_percent(20.0);
    w.prom.wait_until(HIT_RATE, |v| v < 0.5).await;
    let flush = ", flush_on_low_hit_rate = true";

    // Grant missing: denied, nothing flushed.
    let remedy_ = remedy(&w.config("cache-health", &cache_health(&p, &p, flush)));
    let plugin = remedy_.load_named("cache-health").await.unwrap();
    let rec = remedy_.run(&plugin, manual(false)).await;
    let a = actions_on(&rec, &format!("prefix:{p}"));
    assert_eq!(a[0].applied, Applied::Denied, "{rec:#?}");
    assert!(a[0].error.as_ref().unwrap().contains("cache_flush"));

    // Granted, but a dry run: refused, never simulated.
    let granted = format!(
        "config = {{ window = \"{WINDOW}\", key_prefix = \"{p}\"{flush} }}\nscope = {{ cache_prefixes = [\"{p}\"], cache_flush = true }}"
    );
    let remedy_ = remedy(&w.config("cache-health", &granted));
    let plugin = remedy_.load_named("cache-health").await.unwrap();
    let rec = remedy_.run(&plugin, manual(true)).await;
    let a = actions_on(&rec, &format!("prefix:{p}"));
    assert_eq!(a[0].applied, Applied::Refused, "{rec:#?}");
    let keys: Vec<String> = r.keys(format!("{p}*")).await.unwrap();
    assert_eq!(keys.len(), 50);

    // Granted and live: everything under the prefix goes, nothing else.
    let neighbour = format!("{}keep", p.trim_end_matches("servio:"));
    let _: () = r.set(&neighbour, "1").await.unwrap();
    let rec = remedy_.run(&plugin, manual(false)).await;
    assert_eq!(
        actions_on(&rec, &format!("prefix:{p}"))[0].applied,
        Applied::Executed
    );
    assert!(
        rec.outcome
            .as_ref()
            .unwrap()
            .summary
            .contains("flushed 50 key(s)"),
        "{rec:#?}"
    );
    let keys: Vec<String> = r.keys(format!("{p}*")).await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    assert!(exists(&neighbour).await);
    clean(p.trim_end_matches("servio:")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_without_ttl_get_one_live_only_and_malformed_are_escalated() {
    let w = world().await;
    let p = format!("{}:idem:", unique("idem"));
    let mut r = redis().await;
    let _: () = r
        .set_ex(format!("{p}acme:charge:order-1"), "ok", 600)
        .await
        .unwrap();
    let section = format!(
        "config = {{ key_prefix = \"{p}\", default_ttl_s = 3600 }}\nscope = {{ cache_prefixes = [\"{p}\"] }}"
    );
    let remedy_ = remedy(&w.config("idempotency-keys", &section));
    let plugin = remedy_.load_named("idempotency-keys").await.unwrap();
    assert!(healthy(&remedy_.run(&plugin, manual(false)).await));

    let forever = format!("{p}acme:refund:order-2");
    let malformed = format!("{p}charge-order-3");
    let _: () = r.set(&forever, "ok").await.unwrap();
    let _: () = r.set(&malformed, "ok").await.unwrap();
    let dry = remedy_.run(&plugin, manual(true)).await;
    assert!(!healthy(&dry));
    let ttl: i64 = r.ttl(&forever).await.unwrap();
    assert_eq!(ttl, -1, "dry-run sets no TTL");

    let live = remedy_.run(&plugin, manual(false)).await;
    assert_eq!(live.status, RunStatus::Succeeded, "{live:#?}");
    assert_eq!(
        actions_on(&live, &format!("key:{forever}"))[0].applied,
        Applied::Executed
    );
    let ttl: i64 = r.ttl(&forever).await.unwrap();
    assert!((3500..=3600).contains(&ttl), "ttl {ttl}");
    let ttl: i64 = r.ttl(&malformed).await.unwrap();
    assert_eq!(ttl, -1, "malformed keys are never touched");
    let text = outcome_text(&live);
    assert!(
        text.contains("charge-order-3") && text.contains("tenant:operation:scope"),
        "{text}"
    );
    assert!(!live.outcome.as_ref().unwrap().mitigated);
    clean(&p).await;
}
