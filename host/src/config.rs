//! `remedy.toml`: backends and per-plugin settings, validated at load.
//!
//! With no config file, backends come from the environment
//! (`REMEDY_DATABASE_URL` else `DATABASE_URL`, `REMEDY_PROMETHEUS_URL`,
//! `REMEDY_BREAKER_URL`) and every bundled plugin runs on its defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("config file {file}: {key}: {message}")]
    Invalid {
        file: PathBuf,
        key: String,
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub backends: BackendsConfig,
    /// Settings per plugin, by plugin name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Overrides of the seed's escalation policy, by priority (`p0`..`p3`).
    #[serde(default)]
    pub escalation: BTreeMap<String, crate::escalation::PriorityConfig>,
    /// Communication templates by name, beside the seed's `status-page-p0`
    /// and `customer-p1` (a template of the same name replaces the seed's).
    #[serde(default)]
    pub templates: BTreeMap<String, crate::escalation::Template>,
    /// Where this config was read from (for error messages).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `remedy serve`: where it listens, keeps its data and finds plugins.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:8080`; `--listen` and
    /// `REMEDY_LISTEN` override it).
    pub listen: Option<String>,
    /// The store and compiled-code cache (default `./remedy-data`).
    pub data_dir: Option<PathBuf>,
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
    pub drain_timeout_ms: Option<u64>,
    /// How long a client may take to send a request's headers, and then its
    /// body, in ms (default 10000): a half-sent request is dropped, it
    /// neither holds a connection open nor delays shutdown.
    pub read_timeout_ms: Option<u64>,
    /// The kill switch at start-up: every run is a dry run until
    /// `POST /v1/admin/resume`.
    pub paused: Option<bool>,
    /// How long finished runs, received alerts and audit events are kept
    /// (default `90d`; swept at start and hourly). Runs still queued,
    /// running or waiting for approval are never removed, and the action
    /// ledger keeps a year whatever this says (budgets count in it).
    pub retention: Option<String>,
    /// Bearer tokens; with none, the API is open and only a loopback
    /// address may be used.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// A role a token may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Run,
    Approve,
    Alerts,
    /// Everything.
    Admin,
}

/// One bearer token; its value is read from an environment variable so that
/// no secret lives in the file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (appears in the audit log).
    pub name: String,
    /// The environment variable holding the token.
    pub env: String,
    pub roles: Vec<Role>,
}

/// A schedule: exactly one of `cron` (5 or 6 fields, seconds optional) and
/// `every` (`500ms`, `30s`, `5m`, `1h`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub name: String,
    pub cron: Option<String>,
    pub every: Option<String>,
    /// Config keys for the scheduled runs.
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
}

/// Where the capabilities' backends live. Unset means unconfigured: calls
/// answer `unavailable`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendsConfig {
    /// PostgreSQL connection string (`postgres://user@host:5432/db`).
    /// TLS follows its `sslmode` (`prefer`, the default, uses TLS when the
    /// server offers it; `require` insists). As with libpq, the server's
    /// certificate is verified only against `database_ca` when it is set.
    pub database_url: Option<String>,
    /// A PEM file of the CA(s) that sign the PostgreSQL server's
    /// certificate (a private CA), instead of the public web roots.
    pub database_ca: Option<PathBuf>,
    /// Base URL of a Prometheus-compatible API (`http://127.0.0.1:9090`).
    pub prometheus_url: Option<String>,
    /// Base URL of the application's breaker admin API (docs/breaker-api.md).
    pub breaker_url: Option<String>,
    /// Redis URL of the application's cache (`redis://127.0.0.1:6379/0`).
    pub redis_url: Option<String>,
    /// Notify channels by name (`[backends.notify.critical]`).
    #[serde(default)]
    pub notify: BTreeMap<String, ChannelConfig>,
    /// Timeout of one probe request in ms (default 2000).
    pub probe_timeout_ms: Option<u64>,
    /// Timeout of one backend request in ms (default 5000).
    pub request_timeout_ms: Option<u64>,
    /// What of a session's query text (from `pg_stat_activity`, which can
    /// carry passwords and personal data) reaches plugins and so records,
    /// reports and notifications: `redacted` (the default: string literals
    /// and numbers replaced by `?`, at most 256 characters), `full` (at most
    /// 1024 characters) or `off`.
    pub query_text: Option<QueryText>,
}

/// See [`BackendsConfig::query_text`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryText {
    #[default]
    Redacted,
    Full,
    Off,
}

/// What a notify channel speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// A Slack incoming webhook.
    Slack,
    /// PagerDuty Events API v2.
    Pagerduty,
    /// Any endpoint taking the message as JSON.
    Webhook,
}

/// One notify channel. Secrets (webhook URLs, routing keys) come from
/// environment variables.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub kind: ChannelKind,
    /// The endpoint; for PagerDuty it defaults to the public Events API.
    pub url: Option<String>,
    /// An environment variable holding the endpoint (Slack webhook URLs are secrets).
    pub url_env: Option<String>,
    /// PagerDuty: the environment variable holding the integration's routing key.
    pub routing_key_env: Option<String>,
}

/// How mitigations run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Mitigations are recorded as `simulated`, not executed (the default).
    #[default]
    DryRun,
    /// Mitigations are executed.
    Auto,
    /// Mitigation runs dry and its plan waits for a human's approval; the
    /// approved plan then runs live, limited to the planned actions.
    Approve,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::DryRun => "dry-run",
            Mode::Auto => "auto",
            Mode::Approve => "approve",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        [Mode::DryRun, Mode::Auto, Mode::Approve]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// A WIT interface a plugin may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Metrics,
    Database,
    Breaker,
    Cache,
    Notify,
    Probe,
    Log,
}

impl Capability {
    pub const ALL: [Capability; 7] = [
        Capability::Metrics,
        Capability::Database,
        Capability::Breaker,
        Capability::Cache,
        Capability::Notify,
        Capability::Probe,
        Capability::Log,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Metrics => "metrics",
            Capability::Database => "database",
            Capability::Breaker => "breaker",
            Capability::Cache => "cache",
            Capability::Notify => "notify",
            Capability::Probe => "probe",
            Capability::Log => "log",
        }
    }

    pub fn parse(s: &str) -> Option<Capability> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The targets a plugin may act on or reach, as glob patterns (`*`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Breaker names `breaker.force-state` may act on.
    pub breakers: Option<Vec<String>>,
    /// `application_name`s whose sessions `database.cancel/terminate` may act on.
    pub database_applications: Option<Vec<String>>,
    /// Key prefixes `cache.delete/expire` may act on (plain prefixes, no globs).
    pub cache_prefixes: Option<Vec<String>>,
    /// Channel names `notify.send` may use.
    pub notify_channels: Option<Vec<String>>,
    /// `scheme://host[:port]` patterns `probe.get` may fetch.
    pub probe: Option<Vec<String>>,
    /// Allows `cache.flush` (deleting everything under a granted prefix).
    /// Never on by default, not even for bundled plugins.
    pub cache_flush: Option<bool>,
}

/// Settings of one plugin. Every key is optional: bundled plugins bring
/// their own defaults.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// A `.wasm` component to load; bundled plugins need none.
    pub path: Option<PathBuf>,
    pub mode: Option<Mode>,
    /// Interfaces granted (replaces the bundled default).
    pub grants: Option<Vec<Capability>>,
    #[serde(default)]
    pub scope: Scope,
    /// The plugin's own keys (thresholds, lists); values may be strings,
    /// numbers or booleans and reach the plugin as strings.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// Deadline of `detect` in ms (default 2000).
    pub timeout_ms: Option<u64>,
    /// Deadline of `mitigate` in ms (default 10000).
    pub mitigate_timeout_ms: Option<u64>,
    /// Memory of one instance in MiB (default 32).
    pub memory_mb: Option<u64>,
    /// A directory the plugin may read (and nothing else of the host's
    /// filesystem): it appears to the plugin as `/data`, read-only.
    pub files: Option<PathBuf>,
    /// Refuse any bytes but these (`sha256:<hex>` or `<hex>`).
    pub sha256: Option<String>,
    /// Alert names routed to this plugin (replaces what it describes).
    pub alerts: Option<Vec<String>>,
    /// Routed alerts must carry these labels with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Labels naming the target of an alert for single flight (default:
    /// `alertname`, plus `service` and `instance` when present).
    pub target_labels: Option<Vec<String>>,
    #[serde(default)]
    pub schedules: Vec<ScheduleConfig>,
    /// Budgets by action kind (`"database.terminate" = { max = 3, per = "1h" }`);
    /// kinds not listed keep their conservative defaults.
    #[serde(default)]
    pub budgets: BTreeMap<String, crate::guardrails::BudgetConfig>,
    /// Wait after a live action on a target before acting on it again
    /// (default `5m`; `0s` turns it off).
    pub cooldown: Option<String>,
    /// How long a plan in `approve` mode waits (default `1h`).
    pub approval_ttl: Option<String>,
    /// When detect runs again after a live mitigation (default `30s`).
    pub verify_after: Option<String>,
    /// After a run for an alert fails (or is interrupted or skipped), a
    /// repeat of the alert retries it once this long has passed, doubling
    /// per attempt (default `30s`; at most 30 min between attempts).
    pub retry_after: Option<String>,
    /// Escalation priority when verification fails and the alert carries
    /// no `priority` label (default `p1`).
    pub priority: Option<String>,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Self::parse(&text, path)?;
        // Relative plugin paths are relative to the config file.
        let base = path.parent().unwrap_or(Path::new("."));
        for pc in cfg.plugins.values_mut() {
            if let Some(p) = &pc.path {
                if p.is_relative() {
                    pc.path = Some(base.join(p));
                }
            }
        }
        Ok(cfg)
    }

    /// Parses config text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        cfg.source = Some(file.to_path_buf());
        cfg.validate()?;
        Ok(cfg)
    }

    /// No file: backends from the environment, plugins on their defaults.
    pub fn from_env() -> Config {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Config {
            backends: BackendsConfig {
                database_url: var("REMEDY_DATABASE_URL").or_else(|| var("DATABASE_URL")),
                prometheus_url: var("REMEDY_PROMETHEUS_URL"),
                breaker_url: var("REMEDY_BREAKER_URL"),
                redis_url: var("REMEDY_REDIS_URL"),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn invalid(&self, key: String, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.source.clone().unwrap_or_default(),
            key,
            message: message.into(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (k, v) in [
            ("server.drain_timeout_ms", self.server.drain_timeout_ms),
            ("server.read_timeout_ms", self.server.read_timeout_ms),
            ("backends.probe_timeout_ms", self.backends.probe_timeout_ms),
            (
                "backends.request_timeout_ms",
                self.backends.request_timeout_ms,
            ),
        ] {
            if v.is_some_and(|v| v == 0 || v > MAX_TIMEOUT_MS) {
                return Err(self.invalid(
                    k.into(),
                    format!("between 1 and {MAX_TIMEOUT_MS} (10 minutes)"),
                ));
            }
        }
        if let Some(r) = &self.server.retention {
            if let Err(e) = crate::triggers::schedule::parse_duration(r) {
                return Err(self.invalid("server.retention".into(), e));
            }
        }
        for (i, t) in self.server.tokens.iter().enumerate() {
            if t.roles.is_empty() {
                return Err(self.invalid(
                    format!("server.tokens[{i}].roles"),
                    "give the token at least one role",
                ));
            }
        }
        if let Some(l) = &self.server.listen {
            if l.parse::<std::net::SocketAddr>().is_err() {
                return Err(self.invalid(
                    "server.listen".into(),
                    format!("`{l}` is not an address like 127.0.0.1:8080"),
                ));
            }
        }
        for (key, url) in [
            ("backends.prometheus_url", &self.backends.prometheus_url),
            ("backends.breaker_url", &self.backends.breaker_url),
        ] {
            if let Some(u) = url {
                match reqwest::Url::parse(u) {
                    Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
                        return Err(self.invalid(
                            key.into(),
                            "credentials in the URL (`user:pass@`) are not supported: they would travel into errors and records",
                        ))
                    }
                    Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                    Ok(_) => {
                        return Err(self.invalid(key.into(), format!("`{u}` is not an http(s) URL")))
                    }
                    Err(e) => {
                        return Err(self.invalid(key.into(), format!("`{}`: {e}", without_userinfo(u))))
                    }
                }
            }
        }
        if let Some(u) = &self.backends.redis_url {
            if let Err(e) = redis::Client::open(u.as_str()) {
                return Err(self.invalid("backends.redis_url".into(), e.to_string()));
            }
        }
        if let Some(ca) = &self.backends.database_ca {
            if let Err(e) = crate::backends::postgres::tls_config(Some(ca)) {
                return Err(self.invalid("backends.database_ca".into(), e));
            }
        }
        if let Some(u) = &self.backends.database_url {
            if let Err(e) = u.parse::<tokio_postgres::Config>() {
                return Err(self.invalid("backends.database_url".into(), e.to_string()));
            }
        }
        for (p, route) in &self.escalation {
            if crate::escalation::Priority::parse(p).is_none() {
                return Err(self.invalid(
                    format!("escalation.{p}"),
                    "priorities are p0, p1, p2 and p3",
                ));
            }
            for c in route.channels.iter().flatten() {
                if !self.backends.notify.contains_key(c) {
                    return Err(self.invalid(
                        format!("escalation.{p}.channels"),
                        format!("no channel `{c}` under [backends.notify]"),
                    ));
                }
            }
        }
        for (name, t) in &self.templates {
            if t.title.trim().is_empty() || t.body.trim().is_empty() {
                return Err(self.invalid(
                    format!("templates.{name}"),
                    "title and body must not be empty",
                ));
            }
        }
        for (name, pc) in &self.plugins {
            let key = |k: &str| format!("plugins.{name}.{k}");
            if let Some(mb) = pc.memory_mb {
                if !(1..=4096).contains(&mb) {
                    return Err(self.invalid(key("memory_mb"), "must be between 1 and 4096"));
                }
            }
            for (k, v) in [
                ("timeout_ms", pc.timeout_ms),
                ("mitigate_timeout_ms", pc.mitigate_timeout_ms),
            ] {
                if v == Some(0) {
                    return Err(self.invalid(key(k), "must be greater than 0"));
                }
                if v.is_some_and(|v| v > MAX_TIMEOUT_MS) {
                    return Err(
                        self.invalid(key(k), format!("at most {MAX_TIMEOUT_MS} (10 minutes)"))
                    );
                }
            }
            for (i, prefix) in pc.scope.cache_prefixes.iter().flatten().enumerate() {
                if prefix.is_empty() {
                    return Err(self.invalid(
                        key(&format!("scope.cache_prefixes[{i}]")),
                        "an empty prefix would grant every key; name a prefix such as `tenant:acme:`",
                    ));
                }
            }
            for (k, v) in &pc.config {
                if config_value_string(v).is_none() {
                    return Err(self.invalid(
                        key(&format!("config.{k}")),
                        "must be a string, number, boolean or array of those",
                    ));
                }
            }
            for (i, sc) in pc.schedules.iter().enumerate() {
                let k = key(&format!("schedules[{i}]"));
                if let Err(e) = crate::triggers::schedule::Every::parse(sc) {
                    return Err(self.invalid(k, e));
                }
            }
            for (kind, b) in &pc.budgets {
                let k = key(&format!("budgets.{kind}"));
                if !crate::guardrails::ACTION_KINDS.contains(&kind.as_str()) {
                    return Err(self.invalid(
                        k,
                        format!(
                            "`{kind}` is not an action kind; one of {}",
                            crate::guardrails::ACTION_KINDS.join(", ")
                        ),
                    ));
                }
                if b.max == 0 {
                    return Err(
                        self.invalid(k, "max must be at least 1 (remove the grant instead)")
                    );
                }
                if let Err(e) = crate::guardrails::duration("per", &b.per) {
                    return Err(self.invalid(k, e));
                }
            }
            for (k, v) in [
                ("cooldown", &pc.cooldown),
                ("approval_ttl", &pc.approval_ttl),
                ("verify_after", &pc.verify_after),
                ("retry_after", &pc.retry_after),
            ] {
                if let Some(v) = v {
                    if let Err(e) = crate::guardrails::duration(k, v) {
                        return Err(self.invalid(key(k), e));
                    }
                }
            }
            if let Some(f) = &pc.files {
                if !f.is_dir() {
                    return Err(self.invalid(
                        key("files"),
                        format!("`{}` is not a directory", f.display()),
                    ));
                }
            }
            if let Some(p) = &pc.priority {
                if crate::escalation::Priority::parse(p).is_none() {
                    return Err(self.invalid(key("priority"), "one of p0, p1, p2, p3"));
                }
            }
            if let Some(pin) = &pc.sha256 {
                let hex = pin.strip_prefix("sha256:").unwrap_or(pin);
                if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(self.invalid(
                        key("sha256"),
                        "must be 64 hex digits, optionally prefixed by `sha256:`",
                    ));
                }
            }
            for pattern in pc.scope.probe.iter().flatten() {
                if let Err(e) = crate::capabilities::probe::AllowPattern::parse(pattern) {
                    return Err(self.invalid(key("scope.probe"), e));
                }
            }
        }
        Ok(())
    }
}

/// `u` with anything between `://` and `@` masked: an error about a URL
/// must not repeat the password in it.
fn without_userinfo(u: &str) -> String {
    match u.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => u.to_string(),
            }
        }
        None => u.to_string(),
    }
}

/// The longest timeout any `*_ms` key takes: ten minutes.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// A config value as the string a plugin receives; arrays become
/// comma-separated lists.
pub fn config_value_string(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(config_value_string)
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("remedy.toml"))
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = parse("[plugins.x]\ntimeout = 5\n").unwrap_err().to_string();
        assert!(err.contains("remedy.toml"), "{err}");
        assert!(err.contains("timeout"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = parse("[plugins.x]\nmemory_mb = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("plugins.x.memory_mb"), "{err}");
        let err = parse("[backends]\nprometheus_url = \"ftp://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("backends.prometheus_url"), "{err}");
        let err = parse("[plugins.x.scope]\nprobe = [\"not a url\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("plugins.x.scope.probe"), "{err}");
        let err = parse("[plugins.x]\nmode = \"yolo\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mode"), "{err}");
    }

    /// Each of these validated once and then did nothing, or panicked the
    /// store's writer at the first live action (issue 9, items 8 and 18).
    #[test]
    fn silent_or_dangerous_values_are_refused_naming_the_key() {
        let cases = [
            (
                "[plugins.x]\nbudgets = { \"database.terminat\" = { max = 1, per = \"1h\" } }\n",
                "plugins.x.budgets.database.terminat",
                "not an action kind",
            ),
            (
                "[plugins.x]\nbudgets = { \"database.terminate\" = { max = 1, per = \"3000000000000h\" } }\n",
                "plugins.x.budgets.database.terminate",
                "longer than a year",
            ),
            (
                "[plugins.x]\nbudgets = { \"database.terminate\" = { max = 1, per = \"99999999999999999h\" } }\n",
                "plugins.x.budgets.database.terminate",
                "too long",
            ),
            ("[plugins.x]\napproval_ttl = \"9000000h\"\n", "plugins.x.approval_ttl", "longer than a year"),
            ("[plugins.x]\ntimeout_ms = 9223372036854775807\n", "plugins.x.timeout_ms", "at most"),
            ("[plugins.x.scope]\ncache_prefixes = [\"\"]\n", "plugins.x.scope.cache_prefixes[0]", "empty prefix"),
            ("[plugins.x.scope]\nprobe = [\"http://*:*\"]\n", "plugins.x.scope.probe", "every address"),
            ("[backends]\nprometheus_url = \"http://u:secret@127.0.0.1:9090\"\n", "backends.prometheus_url", "credentials"),
            // Found by fuzzing: an unparseable URL was repeated whole.
            ("[backends]\nprometheus_url = \"http://u:secret@127.0.0.1:99999\"\n", "backends.prometheus_url", "invalid port"),
            ("[server]\ndrain_timeout_ms = 0\n", "server.drain_timeout_ms", "between"),
        ];
        for (text, key, why) in cases {
            let err = parse(text).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(why), "{text}: {err}");
            assert!(
                !err.contains("secret"),
                "the error repeats a credential: {err}"
            );
        }
        assert!(parse("[plugins.x.scope]\nprobe = [\"http://*.example.com:*\"]\n").is_ok());
        assert!(parse(
            "[plugins.x]\nbudgets = { \"cache.flush\" = { max = 1, per = \"8784h\" } }\n"
        )
        .is_ok());
    }

    #[test]
    fn escalation_keys_are_checked() {
        let err = parse("[escalation.p9]\nescalate_to = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("escalation.p9"), "{err}");
        let err = parse("[escalation.p0]\nchannels = [\"nowhere\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("escalation.p0.channels") && err.contains("nowhere"),
            "{err}"
        );
        let cfg = parse(
            "[backends.notify.lead]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\n\
             [escalation.p1]\nchannels = [\"lead\"]\n[templates.x]\ntitle = \"t {a}\"\nbody = \"b\"\n",
        )
        .unwrap();
        assert_eq!(cfg.escalation["p1"].channels.as_deref().unwrap(), ["lead"]);
        let err = parse("[templates.x]\ntitle = \"\"\nbody = \"b\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("templates.x"), "{err}");
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/remedy.toml");
        let cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.plugins["circuit-breaker-open"].schedules.len(), 1);
        assert!(cfg.backends.database_url.is_some());
    }

    #[test]
    fn full_config_parses() {
        let cfg = parse(
            r#"
            [backends]
            database_url = "postgres://postgres@127.0.0.1:5432/test"
            prometheus_url = "http://127.0.0.1:9090"
            [plugins.db-connection-exhaustion]
            mode = "auto"
            grants = ["database", "log"]
            config = { long_query_ms = 500, protected_applications = ["a", "b"] }
            [plugins.db-connection-exhaustion.scope]
            database_applications = ["app-*"]
            "#,
        )
        .unwrap();
        let pc = &cfg.plugins["db-connection-exhaustion"];
        assert_eq!(pc.mode, Some(Mode::Auto));
        assert_eq!(
            config_value_string(&pc.config["long_query_ms"]).unwrap(),
            "500"
        );
        assert_eq!(
            config_value_string(&pc.config["protected_applications"]).unwrap(),
            "a,b"
        );
    }
}
