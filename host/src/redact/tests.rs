use super::*;

fn text(s: &str) -> String {
    Redactor::new().text("t", s)
}

#[test]
fn key_names_that_name_a_secret() {
    for k in [
        "api_token",
        "slack_webhook",
        "pagerduty_routing_key",
        "dsn",
        "auth_header",
        "Authorization",
        "db_password",
        "client-secret",
        "apiKey",
        "private_key",
        "session_cookie",
        "oauth",
        "aws_access_key",
    ] {
        assert!(is_secret_key(k), "{k}");
    }
    for k in [
        "long_query_ms",
        "max_terminations",
        "key_prefix",
        "keys",
        "status_url.stripe",
        "channel",
        "window",
        "failures_metric",
        "author",
        "cache_prefixes",
    ] {
        assert!(!is_secret_key(k), "{k}");
    }
}

#[test]
fn random_tokens_are_told_from_names() {
    for t in [
        "9f86d081884c7d659a2feaa0c55ad015",         // hex, 32
        "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",   // base64-ish
        "k8s3j2h1g9f0d7s6a5p4",                     // base36, 20
        "Xy7-Kp92mQ_8vT4nB1wLz0Rs",                 // base64url with separators
        "da39a3ee5e6b4b0d3255bfef95601890afd80709", // a SHA-1
    ] {
        assert!(looks_random(t), "{t}");
    }
    for t in [
        "servio_http_request_duration_seconds_bucket",
        "getIdempotencyResult",
        "MyService_v2_ProductionCluster",
        "pg_stat_activity_2024_01_01",
        "550e8400-e29b-41d4-a716-446655440000", // UUIDs are ids
        "api-7d9f8b6c5d-x2k4p",                 // a pod name
        "customer12345678901234",
        "idle_in_transaction_aborted",
        "a8Fk29dLq0ZmX7p", // short
        "REDACTED12",
    ] {
        assert!(!looks_random(t), "{t}");
    }
}

#[test]
fn known_prefixes_keep_the_prefix() {
    assert_eq!(
        text("sess:sk_live_51HabcDEF0123456789xyz"),
        "sess:sk_live_REDACTED1"
    );
    assert_eq!(text("xoxb-1234-5678-abcdEFGH"), "xoxb-REDACTED1");
    assert_eq!(text("key AKIAIOSFODNN7EXAMPLE."), "key AKIAREDACTED1.");
    assert_eq!(
        text("ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        "ghp_REDACTED1"
    );
    assert_eq!(text("glpat-xxxxXXXX1234yyyyZZ"), "glpat-REDACTED1");
    // Words that only start the same way.
    for s in [
        "sk_test_suite",
        "xapp-settings",
        "AKIA",
        "AKIAlowercaseletters",
        "task_live_x",
        "ghp_short",
    ] {
        assert_eq!(text(s), s);
    }
}

#[test]
fn urls_keep_scheme_and_host_and_lose_their_secrets() {
    assert_eq!(
        text("postgres://app:hunter2@db.internal:5432/orders"),
        "postgres://app:REDACTED1@db.internal:5432/orders"
    );
    assert_eq!(
        text("https://status.example.com/api/v2/status.json?api_key=abc123&v=2"),
        "https://status.example.com/api/v2/status.json?api_key=REDACTED1&v=REDACTED2"
    );
    assert_eq!(
        text("POST https://hooks.slack.com/services/T0ABC/B0DEF/abcdefghijklmnopqrstuvwx now"),
        "POST https://hooks.slack.com/services/REDACTED1 now"
    );
    assert_eq!(
        text("https://api.example.com/v1/hooks/aB3dE5fG7hJ9kL1mN3pQxY/run"),
        "https://api.example.com/v1/hooks/REDACTED1/run"
    );
    assert_eq!(
        text("https://ghp_abcdefghijklmnopqrstuvwxyz0123456789@github.com/o/r"),
        "https://ghp_REDACTED1@github.com/o/r"
    );
    assert_eq!(
        text("https://x.io/cb#access_token=zzz"),
        "https://x.io/cb#access_token=REDACTED1"
    );
    // Nothing secret: left byte for byte (not even normalized).
    for s in [
        "https://status.supabase.com/api/v2/status.json",
        "http://127.0.0.1:9090",
        "postgres://postgres@127.0.0.1:5432/test",
        "see https://example.com/runbooks/db-connections#leaks",
    ] {
        assert_eq!(text(s), s);
    }
    let r = text("https://status.example.com/x?api_key=abc");
    assert!(reqwest::Url::parse(&r).is_ok(), "{r}");
}

#[test]
fn values_after_a_secret_name_in_running_text() {
    assert_eq!(
        text("host=db user=app password=hunter2 sslmode=require"),
        "host=db user=app password=REDACTED1 sslmode=require"
    );
    assert_eq!(
        text("Authorization: Bearer abc.def"),
        "Authorization: Bearer REDACTED1"
    );
    assert_eq!(text("api_key: 'xyz', next"), "api_key: 'REDACTED1', next");
    assert_eq!(text("token:abc123"), "token:REDACTED1");
}

#[test]
fn ordinary_text_sql_and_promql_are_left_alone() {
    for s in [
        "sum(rate(servio_http_requests_total{status=~\"5..\"}[5m])) / sum(rate(servio_http_requests_total[5m]))",
        "histogram_quantile(0.95, sum(rate(servio_http_request_duration_seconds_bucket{service=\"api\"}[5m])) by (le))",
        "SELECT pid, usename, state FROM pg_stat_activity WHERE state = 'idle in transaction' AND now() - xact_start > interval '5 minutes'",
        "idem:acme:charge:ord_1001",
        "key:idem:acme:charge:ord_1001",
        "breaker supabase is OPEN; upstream unknown (probe failed: unavailable: connection refused)",
        "Rotate the Stripe webhook secret: Stripe Dashboard → Developers → Webhooks",
        "alertname=HighErrorRate,instance=db-1",
        "run 0190f5b4-7c3e-7a51-9f2b-3c4d5e6f7a8b",
        "label auth_method=\"oidc\"",
        "",
    ] {
        assert_eq!(text(s), s);
    }
}

#[test]
fn the_same_secret_is_the_same_placeholder_and_two_are_two() {
    let mut r = Redactor::new();
    let a = r.text("a", "k:sk_live_51HabcDEF0123456789xyz");
    let b = r.text("b", "k:sk_live_51HzzzZZZ9876543210abc");
    let c = r.text("c", "key:k:sk_live_51HabcDEF0123456789xyz");
    assert_ne!(a, b);
    assert_eq!(c, format!("key:{a}"));
    assert_eq!(r.count(), 3);
}

#[test]
fn redacting_twice_changes_nothing_more() {
    for s in [
        "postgres://app:hunter2@db/x",
        "https://hooks.slack.com/services/T0/B0/abcdefghijklmnopqrstuvwx",
        "https://s.example.com/a?api_key=abc&x=",
        "k:sk_live_51HabcDEF0123456789xyz and 9f86d081884c7d659a2feaa0c55ad015",
        "password=hunter2 Bearer abc",
    ] {
        let once = text(s);
        let mut r = Redactor::new();
        assert_eq!(r.text("t", &once), once, "{s}");
        assert_eq!(r.count(), 0);
    }
}

#[test]
fn a_secret_keys_value_goes_whole_and_everywhere() {
    let mut r = Redactor::new();
    r.learn("api_token", "hunter2hunter2");
    r.learn("slack_webhook", "https://example.com/hook/abc");
    r.learn("long_query_ms", "200");
    assert_eq!(
        r.keyed("config.api_token", "api_token", "hunter2hunter2"),
        "REDACTED1"
    );
    assert_eq!(
        r.keyed(
            "config.slack_webhook",
            "slack_webhook",
            "https://example.com/hook/abc"
        ),
        "https://example.com/REDACTED2"
    );
    assert_eq!(
        r.keyed("config.long_query_ms", "long_query_ms", "200"),
        "200"
    );
    // A short secret is redacted under its key, but not hunted in text.
    assert_eq!(r.keyed("config.pwd", "pwd", "abc"), "REDACTED3");
    assert_eq!(
        r.text(
            "answers.probe",
            "https://s.example.com/hunter2hunter2/status"
        ),
        "https://s.example.com/REDACTED1/status"
    );
    assert_eq!(r.keyed("config.auth_header", "auth_header", ""), "");
    assert_eq!(
        r.changes().keys().cloned().collect::<Vec<_>>(),
        [
            "answers.probe",
            "config.api_token",
            "config.pwd",
            "config.slack_webhook"
        ]
    );
}

#[test]
fn params_keep_their_keys_and_lose_secret_values() {
    let p: BTreeMap<String, String> = [
        ("api_token", "hunter2"),
        (
            "webhook",
            "https://hooks.slack.com/services/T0/B0/abcdefghijklmnopqrstuvwx",
        ),
        ("long_query_ms", "200"),
        ("note", "use sk_live_51HabcDEF0123456789xyz"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let r = params(&p);
    assert_eq!(r["long_query_ms"], "200");
    assert!(is_placeholder(&r["api_token"]), "{r:?}");
    assert!(
        r["webhook"].starts_with("https://hooks.slack.com/services/REDACTED"),
        "{r:?}"
    );
    assert!(r["note"].starts_with("use sk_live_REDACTED"), "{r:?}");
    let all = format!("{r:?}");
    assert!(
        !all.contains("hunter2") && !all.contains("abcdefghij"),
        "{all}"
    );
}
