//! Flapping: an alert that keeps coming back after Remedy fixed it is not
//! fixed by fixing it again. When the same alert (fingerprint) has had
//! `flap.max` live mitigations of a plugin within `flap.per`, further runs
//! for it are dry runs that say why, a human is told once, and acting
//! resumes when the window has passed or someone clears it.

use chrono::{DateTime, Utc};

use super::launch::Claimed;
use super::Service;
use crate::config::Mode;
use crate::record::{Applied, RunRecord, Trigger};
use crate::store::{RunFilter, StoreError};

/// Settings keys: when a fingerprint was last cleared, and when its
/// flapping was escalated (per plugin).
fn cleared_key(fingerprint: &str) -> String {
    format!("flap-cleared:{fingerprint}")
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

impl Service {
    /// Why claimed run `c` must not act because its alert flaps, if it
    /// must not (the caller makes it a dry run with this note).
    pub(super) async fn flap_hold(&self, c: &Claimed) -> Option<String> {
        let plugin = c.plugin();
        let flap = plugin.settings.limits.flap?;
        let Trigger::Alert { alert } = &c.launch().trigger else {
            return None;
        };
        let mode = c.launch().mode.unwrap_or(plugin.settings.mode);
        if mode != Mode::Auto && c.launch().approved.is_none() {
            return None; // a dry run or a plan: nothing to hold
        }
        let fp = &alert.fingerprint;
        let now = Utc::now();
        let window = chrono::Duration::from_std(flap.per).unwrap_or(chrono::Duration::MAX);
        let mut since = now
            .checked_sub_signed(window)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        if let Some(cleared) = time_setting(self, &cleared_key(fp)).await {
            since = since.max(cleared);
        }
        let filter = RunFilter {
            plugin: Some(plugin.name().to_string()),
            since: Some(crate::record::timestamp(since)),
            limit: Some(1000),
            ..Default::default()
        };
        let acted = match self.store.list_runs(filter).await {
            Ok(runs) => runs
                .iter()
                .filter(|r| r.trigger.subject() == Some(fp.as_str()) && acted_live(r))
                .count() as u32,
            Err(e) => {
                // The run's own writes meet the same store: it fails there.
                tracing::warn!(plugin = %plugin.name(), error = %e, "flapping not checked");
                return None;
            }
        };
        if acted < flap.max {
            return None;
        }
        let per = humantime_span(flap.per);
        let why = format!(
            "flapping: `{}` ({fp}) was mitigated {acted} times in {per}; not acting on it again until the window passes or someone clears it (`remedy alerts clear-flap {fp}`)",
            alert.name
        );
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
    /// no longer count.
    pub async fn clear_flap(&self, fingerprint: &str, by: &str) -> Result<(), StoreError> {
        let now = crate::record::timestamp(Utc::now());
        self.store
            .put_setting(&cleared_key(fingerprint), Some(&now))
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

/// `1h`, `30m`, `90s`.
fn humantime_span(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
