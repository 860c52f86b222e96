//! `remedy.toml`, read once into typed values: durations, schedules,
//! probe patterns, priorities, action kinds and URLs are checked as they
//! are parsed, and an error names the file and the key.
//!
//! Backends a config file leaves unset (or all of them, with no file) come
//! from the environment (`REMEDY_DATABASE_URL` else `DATABASE_URL`,
//! `REMEDY_PROMETHEUS_URL`, `REMEDY_BREAKER_URL`, `REMEDY_REDIS_URL`); with
//! no file every bundled plugin runs on its defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod alerting;
mod backends;
mod chat;
mod plugin;
pub mod schema;
mod server;

pub use crate::grants::{Capability, Scope};
pub use backends::{
    without_userinfo, BackendsConfig, CaFile, ChannelConfig, ChannelKind, DatabaseUrl, HttpUrl,
    QueryText, RedisUrl,
};
pub use chat::{ChatConfig, SlackChannel, SlackConfig, SlackUser, SLACK_API_URL};
pub use plugin::{
    strings, BudgetConfig, ConfigValue, Ladder, LadderStep, MemoryMb, Mode, Pin, PluginConfig,
    Schedule, MAX_MEMORY_MB,
};
pub use server::{Role, ServerConfig, TokenConfig, DEFAULT_LEASE, DEFAULT_RETENTION};

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
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `remedy serve`: listening, data, plugins, tokens, replicas.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where the capabilities' backends live.
    #[serde(default)]
    pub backends: BackendsConfig,
    /// Settings per plugin, by plugin name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Overrides of the seed's escalation policy, by priority (`p0`..`p3`,
    /// or `P0`..`P3`).
    #[serde(default)]
    pub escalation: BTreeMap<crate::escalation::Priority, crate::escalation::PriorityConfig>,
    /// Communication templates by name, beside the seed's `status-page-p0`
    /// and `customer-p1` (a template of the same name replaces the seed's).
    #[serde(default)]
    pub templates: BTreeMap<String, crate::escalation::Template>,
    /// Chat platforms Remedy takes part in (`[chat.slack]`).
    #[serde(default)]
    pub chat: ChatConfig,
    /// Where `serve` sends OpenTelemetry traces (else the standard
    /// `OTEL_EXPORTER_OTLP_*` environment variables; else none are sent).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Where this config was read from (for error messages).
    #[serde(skip)]
    #[schemars(skip)]
    pub source: Option<PathBuf>,
}

/// `[telemetry]`: OpenTelemetry trace export over OTLP/HTTP.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL (`/v1/traces` is appended), as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` would give it.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the spans (default `remedy`, or
    /// `OTEL_SERVICE_NAME`).
    pub service_name: Option<String>,
    /// A link to a run's trace in the console: `{trace_id}` is replaced,
    /// e.g. `http://jaeger:16686/trace/{trace_id}`.
    pub trace_url: Option<String>,
}

/// Parses TOML into `T`; an error names `file`, the key path at fault and
/// its line (config files and `remedy test` fixtures alike).
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &Path,
) -> Result<T, ConfigError> {
    let parse_error = |e: toml::de::Error| ConfigError::Parse {
        file: file.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    };
    let de = toml::Deserializer::parse(text).map_err(parse_error)?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        if key == "." {
            return parse_error(inner);
        }
        let line = inner
            .span()
            .map(|s| {
                format!(
                    " (line {})",
                    // Bytes, not `str` slicing: no char boundary to miss.
                    text.as_bytes()[..s.start.min(text.len())]
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count()
                        + 1
                )
            })
            .unwrap_or_default();
        ConfigError::Invalid {
            file: file.to_path_buf(),
            key,
            message: format!("{}{line}", inner.message().trim_end()),
        }
    })
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Self::parse(&text, path)?;
        cfg.backends_from_env()?;
        cfg.check_alerting()?;
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

    /// Parses config text; `file` names it in errors, with the key at fault.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = parse_toml(text, file)?;
        cfg.source = Some(file.to_path_buf());
        cfg.validate()?;
        Ok(cfg)
    }

    /// No file: backends from the environment, plugins on their defaults.
    /// A malformed variable is an error naming it.
    pub fn from_env() -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        cfg.backends_from_env()?;
        Ok(cfg)
    }

    /// Fills the backends the file leaves unset from the environment
    /// (`REMEDY_DATABASE_URL` else `DATABASE_URL`, `REMEDY_PROMETHEUS_URL`,
    /// `REMEDY_BREAKER_URL`, `REMEDY_REDIS_URL`): a value in the file wins,
    /// so a variable only ever adds a backend. A malformed variable that
    /// would be used is an error naming it.
    pub fn backends_from_env(&mut self) -> Result<(), ConfigError> {
        fn var<T: TryFrom<String, Error = String>>(
            slot: &mut Option<T>,
            names: &[&str],
        ) -> Result<(), ConfigError> {
            if slot.is_some() {
                return Ok(());
            }
            for name in names {
                if let Some(v) = std::env::var(name).ok().filter(|v| !v.trim().is_empty()) {
                    let value = T::try_from(v).map_err(|message| ConfigError::Invalid {
                        file: PathBuf::from("(environment)"),
                        key: name.to_string(),
                        message,
                    })?;
                    *slot = Some(value);
                    return Ok(());
                }
            }
            Ok(())
        }
        let b = &mut self.backends;
        var(
            &mut b.database_url,
            &["REMEDY_DATABASE_URL", "DATABASE_URL"],
        )?;
        var(&mut b.prometheus_url, &["REMEDY_PROMETHEUS_URL"])?;
        var(&mut b.breaker_url, &["REMEDY_BREAKER_URL"])?;
        var(&mut b.redis_url, &["REMEDY_REDIS_URL"])?;
        var(&mut b.alertmanager_url, &["REMEDY_ALERTMANAGER_URL"])
    }

    fn invalid(&self, key: String, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.source.clone().unwrap_or_default(),
            key,
            message: message.into(),
        }
    }

    /// Blocking alerts need an Alertmanager to ask (from the file or the
    /// environment, so checked once both are read).
    pub fn check_alerting(&self) -> Result<(), ConfigError> {
        if self.backends.alertmanager_url.is_none() {
            let blocking = std::iter::once(("server".to_string(), &self.server.block_while_firing))
                .chain(
                    self.plugins
                        .iter()
                        .map(|(n, p)| (format!("plugins.{n}"), &p.block_while_firing)),
                );
            for (at, list) in blocking {
                if list.as_ref().is_some_and(|l| !l.is_empty()) {
                    return Err(self.invalid(
                        format!("{at}.block_while_firing"),
                        "needs `backends.alertmanager_url`: without it Remedy cannot see which alerts fire",
                    ));
                }
            }
        }
        Ok(())
    }

    /// What no single value can check: references between sections, and
    /// the filesystem.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.server.retention.is_some_and(|r| r.get().is_zero()) {
            return Err(self.invalid(
                "server.retention".into(),
                "0 would delete every finished run at once; give a duration such as `90d`",
            ));
        }
        if let Some(lease) = self.server.lease {
            let l = lease.get();
            if l < std::time::Duration::from_secs(3) || l > std::time::Duration::from_secs(600) {
                return Err(self.invalid(
                    "server.lease".into(),
                    "give between `3s` (three missed heartbeats) and `10m`",
                ));
            }
        }
        for (i, t) in self.server.tokens.iter().enumerate() {
            if t.roles.is_empty() {
                return Err(self.invalid(
                    format!("server.tokens[{i}].roles"),
                    "give the token at least one role",
                ));
            }
            // A console session names its token: two of one name would
            // share their sessions.
            if self.server.tokens[..i].iter().any(|o| o.name == t.name) {
                return Err(self.invalid(
                    format!("server.tokens[{i}].name"),
                    format!(
                        "another token is named `{}`; give each its own name",
                        t.name
                    ),
                ));
            }
        }
        for (p, route) in &self.escalation {
            for c in route.channels.iter().flatten() {
                if !self.backends.notify.contains_key(c) {
                    return Err(self.invalid(
                        format!("escalation.{}.channels", p.as_str().to_ascii_lowercase()),
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
            for (i, prefix) in pc.scope.cache_prefixes.iter().flatten().enumerate() {
                if prefix.is_empty() {
                    return Err(self.invalid(
                        key(&format!("scope.cache_prefixes[{i}]")),
                        "an empty prefix would grant every key; name a prefix such as `tenant:acme:`",
                    ));
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
        }
        Ok(())
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
                "plugins.x.budgets",
                "`database.terminat` is not an action kind",
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
            ("[plugins.x.scope]\nprobe = [\"http://*:*\"]\n", "plugins.x.scope.probe[0]", "every address"),
            ("[plugins.x]\npriority = \"p7\"\n", "plugins.x.priority", "not a priority"),
            ("[plugins.x]\napprovals_required = 0\n", "plugins.x.approvals_required", "between 1 and 5"),
            ("[plugins.x]\napprovals_required = 6\n", "plugins.x.approvals_required", "between 1 and 5"),
            ("[plugins.x]\nflap = { max = 0, per = \"1h\" }\n", "plugins.x.flap.max", "between 1 and 100"),
            ("[plugins.x]\nflap = { max = 3 }\n", "plugins.x.flap", "per"),
            ("[plugins.x]\nblock_while_firing = [\"two words\"]\n", "plugins.x.block_while_firing", "neither an alert name nor a selector"),
            ("[[plugins.x.schedules]]\nname = \"t\"\nevery = \"10ms\"\n", "plugins.x.schedules[0]", "100ms"),
            ("[plugins.x]\nconfig = { t = { a = 1 } }\n", "plugins.x.config.t", "must be a string"),
            ("[plugins.x]\nsha256 = \"abc\"\n", "plugins.x.sha256", "64 hex digits"),
            ("[backends.logs.app]\npath = \"app.log\"\n", "backends.logs.app.path", "absolute path to a file"),
            ("[backends.logs.app]\npath = \"/var/log/\"\nmode = 1\n", "backends.logs.app", "unknown field"),
            ("[server]\nretention = \"0s\"\n", "server.retention", "delete every"),
            ("[server]\nlease = \"1s\"\n", "server.lease", "between `3s`"),
            ("[backends]\nprometheus_url = \"http://u:secret@127.0.0.1:9090\"\n", "backends.prometheus_url", "credentials"),
            // Found by fuzzing: an unparseable URL was repeated whole.
            ("[backends]\nprometheus_url = \"http://u:secret@127.0.0.1:99999\"\n", "backends.prometheus_url", "invalid port"),
            ("[server]\ndrain_timeout_ms = 0\n", "server.drain_timeout_ms", "between"),
            (
                "[server]\ntokens = [{ name = \"ops\", env = \"A\", roles = [\"read\"] }, { name = \"ops\", env = \"B\", roles = [\"admin\"] }]\n",
                "server.tokens[1].name",
                "another token is named `ops`",
            ),
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

    /// The line named is the one the bad key or value is on, also when it
    /// starts its line (it was counted one short there).
    #[test]
    fn errors_name_the_line_at_fault() {
        let err = parse("[plugins.x]\n\ntimeout = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("timeout") && err.contains("(line 3)"), "{err}");
        let err = parse("[plugins.x]\n\ncooldown = \"5 parsecs\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plugins.x.cooldown") && err.contains("(line 3)"),
            "{err}"
        );
    }

    #[test]
    fn escalation_keys_are_checked() {
        let err = parse("[escalation.p9]\nescalate_to = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("escalation") && err.contains("`p9` is not a priority"),
            "{err}"
        );
        // `P0` was accepted and then ignored (the policy looked up `p0`).
        let cfg = parse("[escalation.P0]\nescalate_to = \"the CEO\"\n").unwrap();
        let policy = crate::escalation::Policy::new(&cfg.escalation, &cfg.templates);
        assert_eq!(
            policy.route(crate::escalation::Priority::P0).escalate_to,
            "the CEO"
        );
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
        assert_eq!(
            cfg.escalation[&crate::escalation::Priority::P1]
                .channels
                .as_deref()
                .unwrap(),
            ["lead"]
        );
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
        assert_eq!(pc.config["long_query_ms"].0, "500");
        assert_eq!(pc.config["protected_applications"].0, "a,b");
    }
}
