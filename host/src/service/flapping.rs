//! An alert's history decides how its next run goes. A ladder
//! (`["auto", "approve", "escalate"]`) gives the first occurrence within the
//! window its first step, the next one the second, and so on. Flapping: an
//! alert that keeps coming back after Remedy fixed it is not fixed by fixing
//! it again — when the same alert (fingerprint) has had `flap.max` live
//! mitigations of a plugin within `flap.per`, further runs for it are dry
//! runs that say why, a human is told once, and acting resumes when the
//! window has passed or someone clears it.

use chrono::{DateTime, Utc};

use super::launch::Claimed;
use super::Service;
use crate::config::{LadderStep, Mode};
use crate::record::{Applied, RunRecord, Trigger};
use crate::store::{RunFilter, StoreError};

/// Settings keys: when a fingerprint was last cleared, and when its
/// flapping was escalated (per plugin).
fn cleared_key(fingerprint: &str) -> String {
    format!("flap-cleared:{fingerprint}")
}

/// Where a flapping alert is marked for listings (`/v1/alerts`, the
/// console): its plugin and until when.
fn marker_key(fingerprint: &str) -> String {
    format!("flapping:{fingerprint}")
}

fn escalated_key(plugin: &str, fingerprint: &str) -> String {
    format!("flap-escalated:{plugin}:{fingerprint}")
}

fn acted_live(r: &RunRecord) -> bool {
    !r.dry_run
        && r.actions
            .iter()
            .any(|a| a.applied == Applied::Executed && !a.kind.is_notification())
}

async fn time_setting(service: &Service, key: &str) -> Option<DateTime<Utc>> {
    let v = service.store.setting(key).await.ok()??;
    DateTime::parse_from_rfc3339(&v)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// What an alert's history does to a claimed run.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// The ladder's mode for this occurrence.
    pub mode: Option<Mode>,
    /// Why the run must be a dry run (flapping, or the ladder escalates).
    pub hold: Option<String>,
}

/// The window a ladder counts occurrences in without `flap.per`.
const LADDER_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

/// An alert's runs in the window: since when (the window's start, or the
/// last clear, whichever is later), and the plugin's runs for it.
struct AlertRuns {
    since: DateTime<Utc>,
    runs: Vec<RunRecord>,
}

impl Service {
    /// The ladder's step for claimed run `c`, and flapping. The alert's
    /// runs are read from the store at most once, and only when a ladder
    /// or flapping has something to decide.
    pub(super) async fn alert_history(&self, c: &Claimed) -> History {
        let mut h = History::default();
        let limits = &c.plugin().settings.limits;
        let Trigger::Alert { alert } = &c.launch().trigger else {
            return h;
        };
        // Both count in one window: `flap.per`, else an hour.
        let per = limits.flap.map_or(LADDER_WINDOW, |f| f.per);
        let mut read: Option<AlertRuns> = None;
        // An approval or a mode asked for is a human's decision already.
        let ladder = limits
            .ladder
            .as_ref()
            .filter(|_| c.launch().approved.is_none() && c.launch().mode.is_none());
        if let Some(ladder) = ladder {
            let Some(runs) = self
                .alert_runs(c.plugin().name(), &alert.fingerprint, per)
                .await
            else {
                return h;
            };
            let (step, n) = ladder_step(ladder.steps(), c, alert, &runs.runs);
            match step {
                LadderStep::Auto => h.mode = Some(Mode::Auto),
                LadderStep::Approve => h.mode = Some(Mode::Approve),
                LadderStep::DryRun => {
                    h.mode = Some(Mode::DryRun);
                }
                LadderStep::Escalate => {
                    let why = format!(
                        "ladder: occurrence {n} of this alert within {}: {} only escalates it",
                        humantime_span(per),
                        c.plugin().name()
                    );
                    let (actions, _) = self
                        .escalate(
                            c.plugin(),
                            &c.rec,
                            "Repeating alert: escalated, not acted on",
                            why.clone(),
                        )
                        .await;
                    self.audit(
                        Some(&c.rec.id),
                        Some(&c.rec.plugin),
                        "alert.ladder_escalated",
                        serde_json::json!({"occurrence": n, "actions": actions}),
                    )
                    .await;
                    h.hold = Some(why);
                }
            }
            read = Some(runs);
        }
        let mode = c
            .launch()
            .mode
            .or(h.mode)
            .unwrap_or(c.plugin().settings.mode);
        let live = mode == Mode::Auto || c.launch().approved.is_some();
        if let (Some(flap), true, None) = (limits.flap, live, &h.hold) {
            if read.is_none() {
                read = self
                    .alert_runs(c.plugin().name(), &alert.fingerprint, per)
                    .await;
            }
            if let Some(runs) = &read {
                h.hold = self.flap_hold(c, flap, runs).await;
            }
        }
        h
    }

    /// The plugin's runs for alert `fingerprint` within `per` (and since
    /// its flapping was last cleared); `None` when the store cannot say.
    async fn alert_runs(
        &self,
        plugin: &str,
        fingerprint: &str,
        per: std::time::Duration,
    ) -> Option<AlertRuns> {
        let now = Utc::now();
        let window = chrono::Duration::from_std(per).unwrap_or(chrono::Duration::MAX);
        let mut since = now
            .checked_sub_signed(window)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        if let Some(cleared) = time_setting(self, &cleared_key(fingerprint)).await {
            since = since.max(cleared);
        }
        let filter = RunFilter {
            plugin: Some(plugin.to_string()),
            since: Some(crate::record::timestamp(since)),
            limit: Some(1000),
            ..Default::default()
        };
        match self.store.list_runs(filter).await {
            Ok(runs) => Some(AlertRuns {
                since,
                runs: runs
                    .into_iter()
                    .filter(|r| r.trigger.subject() == Some(fingerprint))
                    .collect(),
            }),
            Err(e) => {
                // The run's own writes meet the same store: it fails there.
                tracing::warn!(plugin, error = %e, "the alert's history not read");
                None
            }
        }
    }

    /// Why claimed run `c`, about to act live, must not because its alert
    /// flaps, if it must not (the caller makes it a dry run with this note).
    async fn flap_hold(
        &self,
        c: &Claimed,
        flap: crate::guardrails::Flap,
        history: &AlertRuns,
    ) -> Option<String> {
        let plugin = c.plugin();
        let Trigger::Alert { alert } = &c.launch().trigger else {
            return None;
        };
        let fp = &alert.fingerprint;
        // This episode began at the window's start, or at the last clear.
        let since = history.since;
        let acted: Vec<&RunRecord> = history.runs.iter().filter(|r| acted_live(r)).collect();
        // When the oldest counted mitigation leaves the window.
        let until = acted
            .iter()
            .map(|r| r.started_at)
            .min()
            .and_then(|t| t.checked_add_signed(chrono::Duration::from_std(flap.per).ok()?));
        let acted = acted.len() as u32;
        if acted < flap.max {
            return None;
        }
        let per = humantime_span(flap.per);
        let why = format!(
            "flapping: `{}` ({fp}) was mitigated {acted} times in {per}; not acting on it again until the window passes or someone clears it (`remedy alerts clear-flap {fp}`)",
            alert.name
        );
        let marker =
            serde_json::json!({"plugin": plugin.name(), "mitigations": acted, "until": until});
        if let Err(e) = self
            .store
            .put_setting(&marker_key(fp), Some(&marker.to_string()))
            .await
        {
            tracing::warn!(error = %e, "flapping not marked for the listings");
        }
        self.escalate_flapping_once(c, since, &why).await;
        self.metrics.flapping(plugin.name());
        Some(why)
    }

    /// Tells the priority's route, once per flapping episode (the window,
    /// or since the last clear).
    async fn escalate_flapping_once(&self, c: &Claimed, since: DateTime<Utc>, why: &str) {
        let plugin = c.plugin();
        let Trigger::Alert { alert } = &c.launch().trigger else {
            return;
        };
        let key = escalated_key(plugin.name(), &alert.fingerprint);
        if time_setting(self, &key).await.is_some_and(|t| t >= since) {
            return;
        }
        let stamp = crate::record::timestamp(Utc::now());
        if let Err(e) = self.store.put_setting(&key, Some(&stamp)).await {
            tracing::warn!(error = %e, "flapping escalation not recorded: it may be sent again");
        }
        let (actions, _) = self
            .escalate(
                plugin,
                &c.rec,
                "Flapping: not acting again",
                why.to_string(),
            )
            .await;
        self.audit(
            Some(&c.rec.id),
            Some(&c.rec.plugin),
            "alert.flapping",
            serde_json::json!({"fingerprint": alert.fingerprint, "why": why, "actions": actions}),
        )
        .await;
    }

    /// Clears the flapping of alert `fingerprint`: mitigations before now
    /// no longer count. (Callers check it with [`valid_fingerprint`].)
    pub async fn clear_flap(&self, fingerprint: &str, by: &str) -> Result<(), StoreError> {
        let now = crate::record::timestamp(Utc::now());
        self.store
            .put_setting(&cleared_key(fingerprint), Some(&now))
            .await?;
        self.store
            .put_setting(&marker_key(fingerprint), None)
            .await?;
        self.audit(
            None,
            None,
            "alert.flap_cleared",
            serde_json::json!({"fingerprint": fingerprint, "by": by}),
        )
        .await;
        Ok(())
    }
}

impl Service {
    /// The alerts that flap now, by fingerprint: the plugin that holds off,
    /// its live mitigations in the window, and until when.
    pub async fn flapping_alerts(
        &self,
    ) -> Result<std::collections::BTreeMap<String, serde_json::Value>, StoreError> {
        let now = Utc::now();
        Ok(self
            .store
            .settings_under("flapping:")
            .await?
            .into_iter()
            .filter_map(|(k, v)| {
                let v: serde_json::Value = serde_json::from_str(&v).ok()?;
                let until = v["until"].as_str()?.parse::<DateTime<Utc>>().ok()?;
                (until > now).then(|| (k.trim_start_matches("flapping:").to_string(), v))
            })
            .collect())
    }
}

/// The ladder's step for claimed run `c`, given its alert's runs in the
/// window: occurrences are the alert's distinct `startsAt` before this
/// one's. Answers the step and the occurrence (1-based).
fn ladder_step(
    steps: &[LadderStep],
    c: &Claimed,
    alert: &crate::record::AlertInfo,
    runs: &[RunRecord],
) -> (LadderStep, usize) {
    let mut seen: Vec<&str> = runs
        .iter()
        .filter(|r| r.id != c.rec.id && r.status != crate::record::RunStatus::Skipped)
        .filter_map(|r| match &r.trigger {
            Trigger::Alert { alert: a } if a.starts_at != alert.starts_at => {
                Some(a.starts_at.as_str())
            }
            _ => None,
        })
        .collect();
    seen.sort_unstable();
    seen.dedup();
    // A ladder has at least one step (checked when the config is read).
    (steps[seen.len().min(steps.len() - 1)], seen.len() + 1)
}

/// `1h`, `30m`, `90s`.
fn humantime_span(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// What an alert fingerprint may be where a person types one: at most 128
/// letters, digits, `-`, `_`, `:` or `.` (Alertmanager's are 16 hex digits).
pub fn valid_fingerprint(fp: &str) -> bool {
    !fp.is_empty()
        && fp.len() <= 128
        && fp
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
}
