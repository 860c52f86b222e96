//! `[server]`: where `remedy serve` listens, keeps its data and finds
//! plugins, and who may call it.

use std::path::PathBuf;

use serde::Deserialize;

use crate::units::{Span, TimeoutMs};

/// `remedy serve`: where it listens, keeps its data and finds plugins.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Alerts that hold every plugin's live actions off while they fire
    /// (see `plugins.NAME.block_while_firing`).
    pub block_while_firing: Option<Vec<super::alerting::Selector>>,
    /// Address to listen on (default `127.0.0.1:8080`; `--listen` and
    /// `REMEDY_LISTEN` override it).
    #[schemars(example = &"127.0.0.1:8080")]
    pub listen: Option<std::net::SocketAddr>,
    /// The store and compiled-code cache (default `./remedy-data`).
    pub data_dir: Option<PathBuf>,
    /// A PostgreSQL store (`postgres://…`, or `REMEDY_STORE_URL`) instead of
    /// the embedded SQLite one under `data_dir`. Migrations are applied at
    /// start; a schema newer than this binary is refused.
    pub store: Option<crate::config::DatabaseUrl>,
    /// PEM CA certificate(s) the PostgreSQL store's server certificate must
    /// chain to (libpq's `sslrootcert`). Without it, TLS follows the URL's
    /// `sslmode` (`prefer` by default) and encrypts without verifying.
    pub store_ca: Option<crate::config::CaFile>,
    /// This replica's name in `GET /v1/cluster` and the audit log (default:
    /// the host name and the process id).
    pub replica: Option<String>,
    /// With a PostgreSQL store: how long a replica's heartbeat (sent every
    /// second) may be silent before another takes over its runs, flights,
    /// verifications and the scheduler (default `5s`, between `3s` and
    /// `10m`).
    pub lease: Option<Span>,
    /// A directory watched for custom `.wasm` plugins.
    pub plugins_dir: Option<PathBuf>,
    /// Largest request body in bytes (default 1 MiB).
    pub max_body_bytes: Option<usize>,
    /// Runs executing at once (default 256); further triggers wait, which
    /// slows their answers instead of queueing without bound.
    pub max_concurrent_runs: Option<usize>,
    /// Most runs of one plugin at a time (default: half of
    /// `max_concurrent_runs`, at least 1): a storm routed to one plugin
    /// leaves run slots for the others.
    pub max_runs_per_plugin: Option<usize>,
    /// How long shutdown waits for running runs, in ms (default 10000).
    pub drain_timeout_ms: Option<TimeoutMs>,
    /// How long a client may take to send a request's headers, and then its
    /// body, in ms (default 10000): a half-sent request is dropped, it
    /// neither holds a connection open nor delays shutdown.
    pub read_timeout_ms: Option<TimeoutMs>,
    /// The kill switch at start-up: every run is a dry run until
    /// `POST /v1/admin/resume`.
    pub paused: Option<bool>,
    /// How long finished runs, received alerts and audit events are kept
    /// (default `90d`; swept at start and hourly). Runs still queued,
    /// running or waiting for approval are never removed, and the action
    /// ledger keeps a year whatever this says (budgets count in it).
    pub retention: Option<Span>,
    /// Bearer tokens; with none, the API is open and only a loopback
    /// address may be used.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// minisign public keys (`RW…`) trusted to sign any plugin file.
    #[serde(default)]
    pub trusted_keys: Vec<crate::signature::TrustedKey>,
    /// Refuse plugin files without a `FILE.wasm.minisig` that a trusted key
    /// made (bundled plugins are part of the binary and exempt).
    #[serde(default)]
    pub require_signature: bool,
}

/// Default of `server.lease`.
pub const DEFAULT_LEASE: Span = Span::from_secs(5);

/// Default of `server.retention`.
pub const DEFAULT_RETENTION: Span = Span::from_secs(90 * 86_400);

/// A role a token may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read runs, reports, plugins, alerts, the audit log, events and the
    /// cluster.
    Read,
    /// Start a plugin's run (`POST /v1/plugins/NAME/runs`).
    Run,
    /// Approve and reject plans; clear an alert's flapping hold.
    Approve,
    /// Post alerts (Alertmanager's webhook).
    Alerts,
    /// An AI agent over MCP (`/mcp`): read, investigate, propose plans for
    /// a human to approve — exactly the MCP tools, nothing else.
    Agent,
    /// Everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Run => "run",
            Role::Approve => "approve",
            Role::Alerts => "alerts",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }
}

/// One bearer token; its value is read from an environment variable so that
/// no secret lives in the file.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (appears in the audit log).
    pub name: String,
    /// The environment variable holding the token.
    #[schemars(example = &"REMEDY_TOKEN_ONCALL")]
    pub env: String,
    /// What the token may do.
    pub roles: Vec<Role>,
}
