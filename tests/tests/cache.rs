//! The cache capability against the real Redis: reads, and the gate's key
//! prefix scope on delete / expire, live and dry-run.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use remedy::bindings::remedy::plugin::cache::Host;
use remedy::bindings::types::{Applied, Error};
use remedy::capabilities::cache::redis::Redis;
use remedy::capabilities::Backends;
use remedy::capabilities::HostCtx;
use remedy::config::{Capability, Scope};
use remedy::gate::{Phase, RunGate};
use remedy::grants::Grants;
use remedy::record::Applied as Recorded;

const URL: &str = "redis://127.0.0.1:6379/0";

fn host(allowed_prefix: &str, dry_run: bool) -> HostCtx {
    let mut backends = Backends::none();
    backends.cache = Some(Arc::new(Redis::new(URL, Duration::from_secs(2)).unwrap()));
    let grants = Arc::new(Grants {
        capabilities: [Capability::Cache].into(),
        scope: Scope {
            cache_prefixes: Some(vec![allowed_prefix.to_string()]),
            ..Scope::default()
        },
    });
    let run = Arc::new(RunGate::new("cache-test", "test-run", grants, dry_run));
    HostCtx {
        backends: Arc::new(backends),
        escalation: Arc::default(),
        gate: run.call(Phase::Mitigate, None),
        files: None,
    }
}

#[tokio::test]
async fn reads_and_prefix_scoped_mutations_live_and_dry() {
    let root = remedy_e2e::pg::unique("remedy-test-cache");
    let allowed = format!("{root}:tenant:a:");
    let (inside, other, expiring) = (
        format!("{allowed}k1"),
        format!("{root}:tenant:ab:k2"),
        format!("{allowed}k3"),
    );
    let client = redis::Client::open(URL).unwrap();
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis at 127.0.0.1:6379");
    for k in [&inside, &other, &expiring] {
        let _: () = con.set(k, "v").await.unwrap();
    }

    let mut h = host(&allowed, false);
    let mut keys = h.scan(format!("{root}:*"), 100).await.unwrap();
    keys.sort();
    assert_eq!(keys, vec![inside.clone(), expiring.clone(), other.clone()]);
    assert_eq!(h.ttl(inside.clone()).await.unwrap(), None, "no expiry");
    assert!(matches!(
        h.ttl(format!("{root}:missing")).await,
        Err(Error::Invalid(_))
    ));
    let stats = h.stats().await.unwrap();
    assert!(stats.keys >= 3);

    // Dry-run: recorded, not done.
    let mut dry = host(&allowed, true);
    assert_eq!(
        dry.delete(inside.clone(), "test".into()).await.unwrap(),
        Applied::Simulated
    );
    assert!(con.exists::<_, bool>(&inside).await.unwrap());

    // Live, inside the prefix: done.
    assert_eq!(
        h.delete(inside.clone(), "test".into()).await.unwrap(),
        Applied::Executed
    );
    assert!(!con.exists::<_, bool>(&inside).await.unwrap());
    assert_eq!(
        h.expire(expiring.clone(), 60_000, "test".into())
            .await
            .unwrap(),
        Applied::Executed
    );
    let ttl = h.ttl(expiring.clone()).await.unwrap().unwrap();
    assert!(ttl > 50_000 && ttl <= 60_000, "{ttl}");

    // Outside the prefix (`tenant:ab:` is not `tenant:a:`): denied, untouched.
    assert!(matches!(
        h.delete(other.clone(), "test".into()).await,
        Err(Error::Denied(_))
    ));
    assert!(con.exists::<_, bool>(&other).await.unwrap());

    let journal = h.gate.journal.actions();
    let outcomes: Vec<(String, Recorded)> = journal
        .iter()
        .map(|a| (a.target.clone(), a.applied))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (format!("key:{inside}"), Recorded::Executed),
            (format!("key:{expiring}"), Recorded::Executed),
            (format!("key:{other}"), Recorded::Denied),
        ]
    );
    let _: () = con.del(&[&inside, &other, &expiring]).await.unwrap();
}

#[tokio::test]
async fn unreachable_redis_is_unavailable() {
    let mut backends = Backends::none();
    backends.cache = Some(Arc::new(
        Redis::new("redis://127.0.0.1:1/0", Duration::from_millis(500)).unwrap(),
    ));
    let mut h = host("x", false);
    h.backends = Arc::new(backends);
    assert!(matches!(h.stats().await, Err(Error::Unavailable(_))));
}

/// Calls the backend with `url` (timeout 5 s) and returns how long it took
/// and what it said.
async fn stats_of(
    url: &str,
) -> (
    Duration,
    Result<remedy::capabilities::cache::backend::CacheStats, remedy::backends::BackendError>,
) {
    use remedy::capabilities::cache::backend::CacheBackend;
    let redis = Redis::new(url, Duration::from_secs(5)).unwrap();
    let started = std::time::Instant::now();
    let r = redis.stats().await;
    (started.elapsed(), r)
}

/// A password the server does not take is said at once, in the server's
/// words and without the password, instead of retrying to the deadline and
/// reading as "no answer".
#[tokio::test]
async fn refused_credentials_are_said_at_once_without_the_password() {
    let secret = remedy_e2e::pg::unique("remedy-test-secret");
    let (took, r) = stats_of(&format!("redis://:{secret}@127.0.0.1:6379/0")).await;
    let msg = match r {
        Err(remedy::backends::BackendError::Failed(m)) => m,
        other => panic!("expected a refusal, got {other:?} after {took:?}"),
    };
    assert!(took < Duration::from_secs(1), "took {took:?}: {msg}");
    assert!(
        msg.contains("redis at 127.0.0.1:6379 refused the credentials"),
        "{msg}"
    );
    // This server has no password: it says so.
    assert!(msg.contains("without any password configured"), "{msg}");
    assert!(!msg.contains(&secret), "the password leaked: {msg}");
}

/// With a user of our own: a wrong password reads WRONGPASS, a command the
/// user may not run reads NOPERM; both at once, neither with the password.
#[tokio::test]
async fn wrong_password_and_missing_permission_name_the_server_error() {
    let user = remedy_e2e::pg::unique("remedy-test-user");
    let secret = remedy_e2e::pg::unique("remedy-test-secret");
    let admin = redis::Client::open(URL).unwrap();
    let mut con = admin.get_multiplexed_async_connection().await.unwrap();
    // Allowed everything but INFO, which `stats` needs.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(format!(">{secret}"))
        .arg("~*")
        .arg("+@all")
        .arg("-info")
        .query_async(&mut con)
        .await
        .unwrap();
    let wrong = stats_of(&format!("redis://{user}:not-{secret}@127.0.0.1:6379/0")).await;
    let right = stats_of(&format!("redis://{user}:{secret}@127.0.0.1:6379/0")).await;
    let _: u32 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut con)
        .await
        .unwrap();
    for ((took, r), code) in [(wrong, "WRONGPASS"), (right, "NOPERM")] {
        let msg = match r {
            Err(remedy::backends::BackendError::Failed(m)) => m,
            other => panic!("expected {code}, got {other:?} after {took:?}"),
        };
        assert!(took < Duration::from_secs(1), "took {took:?}: {msg}");
        assert!(msg.contains("redis at 127.0.0.1:6379 refused"), "{msg}");
        assert!(msg.contains(code), "{msg}");
        assert!(!msg.contains(&secret), "the password leaked: {msg}");
    }
}
