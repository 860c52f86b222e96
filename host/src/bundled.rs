//! The runbooks shipped inside the binary (compiled from plugins/ by
//! build.rs), with their default grants and scopes.

use crate::grants::{AllowPattern, Capability, Scope};

pub struct Bundled {
    pub name: &'static str,
    pub wasm: &'static [u8],
    pub grants: &'static [Capability],
    pub scope: fn() -> Scope,
}

macro_rules! wasm {
    ($file:literal) => {
        include_bytes!(concat!(env!("REMEDY_BUNDLED_DIR"), "/", $file))
    };
}

fn strings(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

pub const BUNDLED: &[Bundled] = &[
    Bundled {
        name: "db-connection-exhaustion",
        wasm: wasm!("db_connection_exhaustion.wasm"),
        grants: &[Capability::Database, Capability::Log],
        // Any application's session; `protected_applications` in the
        // plugin's config keeps its hands off the ones that matter.
        scope: || Scope {
            database_applications: strings(&["*"]),
            ..Scope::default()
        },
    },
    Bundled {
        name: "circuit-breaker-open",
        wasm: wasm!("circuit_breaker_open.wasm"),
        grants: &[
            Capability::Breaker,
            Capability::Probe,
            Capability::Notify,
            Capability::Log,
        ],
        scope: || Scope {
            breakers: strings(&["stripe", "supabase", "openai"]),
            probe: Some(vec![
                AllowPattern::https("status.stripe.com"),
                AllowPattern::https("status.supabase.com"),
                AllowPattern::https("status.openai.com"),
            ]),
            notify_channels: strings(&["*"]),
            ..Scope::default()
        },
    },
    Bundled {
        name: "payment-processing-failure",
        wasm: wasm!("payment_processing_failure.wasm"),
        grants: &[
            Capability::Metrics,
            Capability::Breaker,
            Capability::Probe,
            Capability::Notify,
            Capability::Log,
        ],
        scope: || Scope {
            breakers: strings(&["stripe"]),
            probe: Some(vec![AllowPattern::https("status.stripe.com")]),
            notify_channels: strings(&["*"]),
            ..Scope::default()
        },
    },
    Bundled {
        name: "webhook-security",
        wasm: wasm!("webhook_security.wasm"),
        grants: &[Capability::Metrics, Capability::Notify, Capability::Log],
        scope: || Scope {
            notify_channels: strings(&["*"]),
            ..Scope::default()
        },
    },
    Bundled {
        name: "high-error-rate",
        wasm: wasm!("high_error_rate.wasm"),
        // A rollback still needs [backends.deploy], and an approved plan
        // unless the operator set `auto_rollback`.
        grants: &[
            Capability::Metrics,
            Capability::Notify,
            Capability::Logs,
            Capability::Deploy,
            Capability::Log,
        ],
        scope: || Scope {
            notify_channels: strings(&["*"]),
            log_sources: strings(&["app"]),
            ..Scope::default()
        },
    },
    Bundled {
        name: "high-latency",
        wasm: wasm!("high_latency.wasm"),
        grants: &[Capability::Metrics, Capability::Database, Capability::Log],
        // Cancelling a query leaves its session alive: any application's
        // query, minus `protected_applications`.
        scope: || Scope {
            database_applications: strings(&["*"]),
            ..Scope::default()
        },
    },
    Bundled {
        name: "cache-health",
        wasm: wasm!("cache_health.wasm"),
        grants: &[Capability::Metrics, Capability::Cache, Capability::Log],
        // The application's key space only; `cache_flush` stays off.
        scope: || Scope {
            cache_prefixes: strings(&["servio:"]),
            ..Scope::default()
        },
    },
    Bundled {
        name: "idempotency-keys",
        wasm: wasm!("idempotency_keys.wasm"),
        grants: &[Capability::Cache, Capability::Log],
        scope: || Scope {
            cache_prefixes: strings(&["idem:"]),
            ..Scope::default()
        },
    },
];

pub fn find(name: &str) -> Option<&'static Bundled> {
    BUNDLED.iter().find(|b| b.name == name)
}
