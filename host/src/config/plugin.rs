//! `[plugins.NAME]`: one plugin's mode, grants, limits, routing and
//! schedules, each value typed as it is read.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::action::{ActionKind, Budget};
use crate::escalation::Priority;
use crate::grants::{Capability, Scope};
use crate::units::{Every, Span, TimeoutMs};

/// How mitigations run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default, schemars::JsonSchema,
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

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::DryRun => "dry-run",
            Mode::Auto => "auto",
            Mode::Approve => "approve",
        }
    }

    /// How far a run in this mode may act: dry-run never, approve once a
    /// human approved its plan, auto at once. A request may lower it.
    pub fn risk(self) -> u8 {
        match self {
            Mode::DryRun => 0,
            Mode::Approve => 1,
            Mode::Auto => 2,
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        [Mode::DryRun, Mode::Auto, Mode::Approve]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// Settings of one plugin. Every key is optional: bundled plugins bring
/// their own defaults.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// A `.wasm` component to load; bundled plugins need none.
    pub path: Option<PathBuf>,
    /// How mitigations run: `dry-run` (the default), `approve` or `auto`.
    pub mode: Option<Mode>,
    /// Interfaces granted (replaces the bundled default).
    pub grants: Option<Vec<Capability>>,
    /// The targets the granted interfaces may act on or reach.
    #[serde(default)]
    pub scope: Scope,
    /// The plugin's own keys (thresholds, lists); values may be strings,
    /// numbers or booleans and reach the plugin as strings.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
    /// Deadline of `detect` in ms (default 2000).
    pub timeout_ms: Option<TimeoutMs>,
    /// Deadline of `mitigate` in ms (default 10000).
    pub mitigate_timeout_ms: Option<TimeoutMs>,
    /// Memory of one instance in MiB (default 32).
    pub memory_mb: Option<MemoryMb>,
    /// A directory the plugin may read (and nothing else of the host's
    /// filesystem): it appears to the plugin as `/data`, read-only.
    pub files: Option<PathBuf>,
    /// Refuse any bytes but these (`sha256:<hex>` or `<hex>`).
    pub sha256: Option<Pin>,
    /// Alert names routed to this plugin (replaces what it describes).
    pub alerts: Option<Vec<String>>,
    /// Routed alerts must carry these labels with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Labels naming the target of an alert for single flight (default:
    /// `alertname`, plus `service` and `instance` when present).
    pub target_labels: Option<Vec<String>>,
    /// Runs on a timer (`[[plugins.NAME.schedules]]`).
    #[serde(default)]
    pub schedules: Vec<Schedule>,
    /// Budgets by action kind (`"database.terminate" = { max = 3, per = "1h" }`);
    /// kinds not listed keep their conservative defaults.
    #[serde(default)]
    pub budgets: BTreeMap<ActionKind, BudgetConfig>,
    /// Wait after a live action on a target before acting on it again
    /// (default `5m`; `0s` turns it off).
    pub cooldown: Option<Span>,
    /// How long a plan in `approve` mode waits (default `1h`).
    pub approval_ttl: Option<Span>,
    /// How many distinct people must approve a plan before it runs (1 to
    /// 5; default 1). With 2 or more, whoever asked for a manual run is
    /// not one of them.
    pub approvals_required: Option<ApprovalsRequired>,
    /// The Slack channel this plugin's plans are posted to (over
    /// `[chat.slack]`'s routing by priority).
    pub slack_channel: Option<super::SlackChannel>,
    /// Before the first live action of a run an alert started, ask
    /// Alertmanager whether the alert still fires, and act only if it does
    /// (default true; needs `backends.alertmanager_url`).
    pub act_only_while_firing: Option<bool>,
    /// When Alertmanager cannot be asked whether the alert still fires:
    /// act on the webhook's word (`true`, the default) or not at all.
    pub act_if_alertmanager_down: Option<bool>,
    /// Alerts that hold this plugin's live actions off while they fire
    /// (`MaintenanceWindow`, `{alertname="DeployInProgress", team="payments"}`),
    /// beside `[server] block_while_firing`.
    pub block_while_firing: Option<Vec<super::alerting::Selector>>,
    /// Silence the alert in Alertmanager while acting on it, as a lease
    /// renewed until verification ends (default false).
    pub silence_while_acting: Option<bool>,
    /// The silence's lease: how long it outlives a replica that died
    /// (default `2m`).
    pub silence_lease: Option<Span>,
    /// `{ max = 3, per = "1h" }`: after `max` live mitigations of one alert
    /// (fingerprint) within `per`, its runs are dry runs until the window
    /// passes or someone clears it; a human is told once.
    pub flap: Option<FlapConfig>,
    /// Tiered remediation by how often one alert came back within the
    /// window (`flap.per`, else an hour): the first occurrence runs as the
    /// first step says, the next as the second… (`["auto", "approve",
    /// "escalate"]`); the last step holds for every later one.
    pub ladder: Option<Ladder>,
    /// When detect runs again after a live mitigation (default `30s`).
    pub verify_after: Option<Span>,
    /// After a run for an alert fails (or is interrupted or skipped), a
    /// repeat of the alert retries it once this long has passed, doubling
    /// per attempt (default `30s`; at most 30 min between attempts).
    pub retry_after: Option<Span>,
    /// Escalation priority when verification fails and the alert carries
    /// no `priority` label (default `p1`).
    pub priority: Option<Priority>,
    /// minisign public keys trusted to sign this plugin's file (beside
    /// `server.trusted_keys`).
    /// A plugin with its own keys must be signed by one of them.
    #[serde(default)]
    pub trusted_keys: Vec<crate::signature::TrustedKey>,
    /// Load a signed file older than the newest one trusted for this name
    /// before (a deliberate rollback); off, such a file is refused, since a
    /// signature binds bytes, not a version.
    #[serde(default)]
    pub allow_older_signature: bool,
}

/// A plugin config value as the string the plugin receives: strings,
/// numbers and booleans, and arrays of those as comma-separated lists.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(try_from = "toml::Value")]
#[schemars(with = "super::schema::ConfigValueSchema")]
pub struct ConfigValue(pub String);

impl TryFrom<toml::Value> for ConfigValue {
    type Error = String;
    fn try_from(v: toml::Value) -> Result<Self, String> {
        fn text(v: &toml::Value) -> Option<String> {
            match v {
                toml::Value::String(s) => Some(s.clone()),
                toml::Value::Integer(i) => Some(i.to_string()),
                toml::Value::Float(f) => Some(f.to_string()),
                toml::Value::Boolean(b) => Some(b.to_string()),
                toml::Value::Array(items) => items
                    .iter()
                    .map(text)
                    .collect::<Option<Vec<_>>>()
                    .map(|v| v.join(",")),
                _ => None,
            }
        }
        text(&v)
            .map(ConfigValue)
            .ok_or_else(|| "must be a string, number, boolean or array of those".into())
    }
}

/// Config values as plugins receive them.
pub fn strings(values: &BTreeMap<String, ConfigValue>) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// The most memory an instance may be given, in MiB (the engine's limit:
/// a larger `memory_mb` is an error, not silently cut).
pub const MAX_MEMORY_MB: u64 = 512;

/// Memory of one instance in MiB: 1 to 512 (the engine's limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "u64")]
#[schemars(extend("minimum" = 1, "maximum" = 512), example = 64)]
pub struct MemoryMb(pub u64);

impl TryFrom<u64> for MemoryMb {
    type Error = String;
    fn try_from(mb: u64) -> Result<Self, String> {
        let max = MAX_MEMORY_MB;
        if (1..=max).contains(&mb) {
            Ok(MemoryMb(mb))
        } else {
            Err(format!("{mb}: must be between 1 and {max}"))
        }
    }
}

/// How many people must approve a plan: 1 to 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "u64")]
#[schemars(extend("minimum" = 1, "maximum" = 5), example = 2)]
pub struct ApprovalsRequired(u32);

impl ApprovalsRequired {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u64> for ApprovalsRequired {
    type Error = String;
    fn try_from(n: u64) -> Result<Self, String> {
        match u32::try_from(n) {
            Ok(n @ 1..=5) => Ok(ApprovalsRequired(n)),
            _ => Err(format!("{n}: must be between 1 and 5")),
        }
    }
}

/// A pinned digest: 64 hex digits, optionally prefixed by `sha256:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String")]
#[schemars(
    extend("pattern" = "^(sha256:)?[0-9a-fA-F]{64}$"),
    example = &"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
)]
pub struct Pin(String);

impl Pin {
    pub fn matches(&self, digest: &str) -> bool {
        self.0 == digest
    }
}

impl TryFrom<String> for Pin {
    type Error = String;
    fn try_from(pin: String) -> Result<Self, String> {
        let hex = pin.strip_prefix("sha256:").unwrap_or(&pin);
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("must be 64 hex digits, optionally prefixed by `sha256:`".into());
        }
        Ok(Pin(format!("sha256:{}", hex.to_ascii_lowercase())))
    }
}

/// A budget as configured: `{ max = 3, per = "1h" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "RawBudget")]
#[schemars(with = "RawBudget")]
pub struct BudgetConfig(pub Budget);

/// At most `max` live actions of a kind per `per` (a rolling window).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Budget")]
struct RawBudget {
    /// Live actions allowed in the window (at least 1).
    #[schemars(extend("minimum" = 1))]
    max: u32,
    /// The window.
    per: Span,
}

impl TryFrom<RawBudget> for BudgetConfig {
    type Error = String;
    fn try_from(b: RawBudget) -> Result<Self, String> {
        if b.max == 0 {
            return Err("max must be at least 1 (remove the grant instead)".into());
        }
        if b.per.get().is_zero() {
            return Err("per must be longer than 0".into());
        }
        Ok(BudgetConfig(Budget {
            max: b.max,
            per: b.per.get(),
        }))
    }
}

/// A schedule: exactly one of `cron` (5 or 6 fields, seconds optional) and
/// `every` (`500ms`, `30s`, `5m`, `1h`), and the config keys of its runs.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "RawSchedule")]
#[schemars(with = "RawSchedule")]
pub struct Schedule {
    pub name: String,
    pub every: Every,
    pub params: BTreeMap<String, String>,
}

/// A schedule: exactly one of `cron` and `every`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Schedule")]
struct RawSchedule {
    /// The schedule's name (in records and metrics).
    name: String,
    /// A cron expression, 5 fields or 6 with seconds first, in UTC.
    #[schemars(example = &"*/5 * * * *")]
    cron: Option<String>,
    /// A fixed interval: `500ms`, `30s`, `5m`, `1h`.
    #[schemars(example = &"1m")]
    every: Option<String>,
    /// Config keys of this schedule's runs, over the plugin's `config`.
    #[serde(default)]
    params: BTreeMap<String, ConfigValue>,
}

impl TryFrom<RawSchedule> for Schedule {
    type Error = String;
    fn try_from(s: RawSchedule) -> Result<Self, String> {
        let every = Every::parse(s.cron.as_deref(), s.every.as_deref())
            .map_err(|e| format!("schedule `{}`: {e}", s.name))?;
        Ok(Schedule {
            params: strings(&s.params),
            name: s.name,
            every,
        })
    }
}

/// Flapping: after `max` live mitigations of one alert (fingerprint)
/// within `per`, its runs are dry runs until the window passes or someone
/// clears it.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlapConfig {
    /// Live mitigations of one alert allowed within `per` (1 to 100).
    pub max: FlapMax,
    /// The window.
    pub per: Span,
}

/// 1 to 100 live mitigations.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "u32")]
#[schemars(extend("minimum" = 1, "maximum" = 100))]
pub struct FlapMax(u32);

impl FlapMax {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for FlapMax {
    type Error = String;
    fn try_from(n: u32) -> Result<Self, String> {
        if (1..=100).contains(&n) {
            Ok(FlapMax(n))
        } else {
            Err(format!("flap.max must be between 1 and 100, not {n}"))
        }
    }
}

/// One step of a [`Ladder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LadderStep {
    /// Act at once.
    Auto,
    /// Plan, and act once a human approved.
    Approve,
    /// Record what would be done.
    DryRun,
    /// A dry run that tells the plugin's priority route.
    Escalate,
}

/// Tiered remediation by how often an alert came back (a plugin's
/// `ladder`): at least one step.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "Vec<LadderStep>")]
#[schemars(extend("minItems" = 1), example = ["auto", "approve", "escalate"])]
pub struct Ladder(Vec<LadderStep>);

impl Ladder {
    pub fn steps(&self) -> &[LadderStep] {
        &self.0
    }
}

impl TryFrom<Vec<LadderStep>> for Ladder {
    type Error = String;
    fn try_from(steps: Vec<LadderStep>) -> Result<Self, String> {
        if steps.is_empty() {
            return Err(
                "a ladder needs at least one step: auto, approve, dry-run or escalate".into(),
            );
        }
        Ok(Ladder(steps))
    }
}
