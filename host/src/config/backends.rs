//! `[backends]`: where the capabilities' backends live. URLs and the CA
//! file are checked (and the CA parsed) when the config is read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::units::TimeoutMs;

/// Where the capabilities' backends live. Unset means unconfigured: calls
/// answer `unavailable`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendsConfig {
    /// PostgreSQL connection string (`postgres://user@host:5432/db`).
    /// TLS follows its `sslmode` (`prefer`, libpq's default, uses TLS when the
    /// server offers it; `require` insists). As with libpq, the server's
    /// certificate is verified only against `database_ca` when it is set.
    pub database_url: Option<DatabaseUrl>,
    /// A PEM file of the CA(s) that sign the PostgreSQL server's
    /// certificate (a private CA), instead of the public web roots.
    pub database_ca: Option<CaFile>,
    /// Base URL of a Prometheus-compatible API (`http://127.0.0.1:9090`).
    pub prometheus_url: Option<HttpUrl>,
    /// Base URL of the application's breaker admin API (docs/breaker-api.md).
    pub breaker_url: Option<HttpUrl>,
    /// Redis URL of the application's cache (`redis://127.0.0.1:6379/0`).
    pub redis_url: Option<RedisUrl>,
    /// Alertmanager's base URL (`http://127.0.0.1:9093`): the host asks it
    /// which alerts fire before acting (see `act_only_while_firing`,
    /// `block_while_firing`).
    pub alertmanager_url: Option<HttpUrl>,
    /// An environment variable holding a bearer token for Alertmanager (or
    /// the proxy in front of it).
    pub alertmanager_token_env: Option<String>,
    /// An environment variable holding `user:password` for basic auth.
    pub alertmanager_basic_auth_env: Option<String>,
    /// Notify channels by name (`[backends.notify.critical]`).
    #[serde(default)]
    pub notify: BTreeMap<String, ChannelConfig>,
    /// Log files plugins may read, by name (`[backends.logs.app] path =
    /// "/var/log/app.log"`), for the `logs` interface.
    #[serde(default)]
    pub logs: BTreeMap<String, LogSourceConfig>,
    /// The git repository whose branch is what runs, for the `deploy`
    /// interface (`[backends.deploy] repo = "…"`).
    pub deploy: Option<DeployConfig>,
    /// Timeout of one probe request in ms (default 2000).
    pub probe_timeout_ms: Option<TimeoutMs>,
    /// Timeout of one backend request in ms (default 5000).
    pub request_timeout_ms: Option<TimeoutMs>,
    /// What of a session's query text (from `pg_stat_activity`, which can
    /// carry passwords and personal data) reaches plugins and so records,
    /// reports and notifications: `redacted` (the default: string literals
    /// and numbers replaced by `?`, at most 256 characters), `full` (at most
    /// 1024 characters) or `off`.
    pub query_text: Option<QueryText>,
}

/// See [`BackendsConfig::query_text`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum QueryText {
    /// String literals and numbers replaced by `?`, at most 256 characters.
    #[default]
    Redacted,
    /// As the server has it, at most 1024 characters.
    Full,
    /// None.
    Off,
}

/// What a notify channel speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// A Slack incoming webhook.
    Slack,
    /// PagerDuty Events API v2.
    Pagerduty,
    /// Grafana's annotations API: what Remedy did, on the dashboards.
    Grafana,
    /// Any endpoint taking the message as JSON.
    Webhook,
}

/// One notify channel. Secrets (webhook URLs, routing keys) come from
/// environment variables.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// What the channel speaks.
    pub kind: ChannelKind,
    /// The endpoint; for PagerDuty it defaults to the public Events API.
    pub url: Option<String>,
    /// An environment variable holding the endpoint (Slack webhook URLs are secrets).
    pub url_env: Option<String>,
    /// PagerDuty: the environment variable holding the integration's routing key.
    pub routing_key_env: Option<String>,
    /// PagerDuty: acknowledge the incidents a run opened when a human
    /// approves the next plan for the same alert (default true).
    pub acknowledge_on_approval: Option<bool>,
    /// PagerDuty: resolve them when verification reads `resolved` (default true).
    pub resolve_on_verified: Option<bool>,
    /// Grafana: the environment variable holding a service-account token.
    pub token_env: Option<String>,
    /// Grafana: the dashboard the annotations go on (organisation-wide without).
    pub dashboard_uid: Option<String>,
}

/// One log source: the file whose last lines plugins read. Its directory
/// is the most a read can reach; `NAME.1` beside it is its predecessor
/// after a rotation.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogSourceConfig {
    /// The file's absolute path.
    #[schemars(example = &"/var/log/servio/access.log")]
    pub path: LogPath,
}

/// An absolute path to a file (checked when the config is read).
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "PathBuf")]
pub struct LogPath(PathBuf);

impl LogPath {
    pub fn get(&self) -> &Path {
        &self.0
    }
}

impl TryFrom<PathBuf> for LogPath {
    type Error = String;
    fn try_from(p: PathBuf) -> Result<Self, String> {
        if !p.is_absolute() || p.file_name().is_none() || p.to_str().is_none() {
            return Err(format!(
                "`{}` is not an absolute path to a file",
                p.display()
            ));
        }
        Ok(LogPath(p))
    }
}

/// `[backends.deploy]`: where rollbacks are pushed. Credentials come from
/// the environment (`token_env`) or an ssh key file, never the config.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    /// The remote as git names it: `https://host/org/app.git`,
    /// `ssh://git@host/org/app.git`, `git@host:org/app.git` or a path.
    pub repo: String,
    /// The deployed branch (default `main`).
    pub branch: Option<String>,
    /// HTTPS: an environment variable holding the token (sent as the
    /// password of `username`).
    pub token_env: Option<String>,
    /// HTTPS: the user the token belongs to (default `x-access-token`,
    /// what GitHub and Gitea accept with any token).
    pub username: Option<String>,
    /// ssh: the private key file (read by ssh, never by Remedy).
    pub ssh_key: Option<PathBuf>,
    /// ssh: the known_hosts file the server's key must be in (strict
    /// checking is always on).
    pub known_hosts: Option<PathBuf>,
    /// Author and committer name of revert commits (default `Remedy`).
    pub author_name: Option<String>,
    /// Author and committer email of revert commits (default
    /// `remedy@localhost`).
    pub author_email: Option<String>,
    /// Timeout of one git command in ms (default 20000): a push that
    /// hangs longer is stopped and the remote read back.
    pub timeout_ms: Option<TimeoutMs>,
    /// Let a plugin in mode `auto` roll back without an approved plan
    /// (default false: a rollback runs only once a human approved it).
    pub auto_rollback: Option<bool>,
}

/// A string newtype whose value `check` accepted when the config was read.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        #[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
        #[serde(try_from = "String")]
        $(#[$doc])*
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(u: String) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(&u).map(|()| $name(u))
            }
        }
    };
}

checked_string!(
    /// An http(s) base URL without credentials (they would travel into
    /// errors and records).
    #[schemars(example = &"http://127.0.0.1:9090")]
    HttpUrl,
    |u| match reqwest::Url::parse(u) {
        Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => Err(
            "credentials in the URL (`user:pass@`) are not supported: they would travel into errors and records".into(),
        ),
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        Ok(_) => Err(format!("`{}` is not an http(s) URL", without_userinfo(u))),
        Err(e) => Err(format!("`{}`: {e}", without_userinfo(u))),
    }
);

checked_string!(
    /// A Redis URL the client accepts.
    #[schemars(example = &"redis://127.0.0.1:6379/0")]
    RedisUrl,
    |u| redis::Client::open(u)
        .map(drop)
        .map_err(|e| format!("`{}`: {e}", without_userinfo(u)))
);

checked_string!(
    /// A PostgreSQL connection string the client accepts.
    #[schemars(example = &"postgres://remedy@db.internal:5432/remedy?sslmode=require")]
    DatabaseUrl,
    |u| u
        .parse::<tokio_postgres::Config>()
        .map(drop)
        .map_err(|e| e.to_string())
);

/// A PEM file of CA certificates, read and parsed when the config is.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "PathBuf")]
#[schemars(with = "PathBuf", example = &"/etc/remedy/db-ca.pem")]
pub struct CaFile {
    pub path: PathBuf,
    pub certs: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl CaFile {
    pub fn read(path: &Path) -> Result<CaFile, String> {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let certs = rustls::pki_types::pem::PemObject::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificate in it", path.display()));
        }
        Ok(CaFile {
            path: path.to_path_buf(),
            certs,
        })
    }
}

impl TryFrom<PathBuf> for CaFile {
    type Error = String;
    fn try_from(p: PathBuf) -> Result<Self, String> {
        CaFile::read(&p)
    }
}

/// `u` with anything between `://` and `@` masked: an error about a URL
/// must not repeat the password in it.
pub fn without_userinfo(u: &str) -> String {
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
