//! The question asked before a run's first live action: may it act, given
//! what Alertmanager knows right now? The answer holds for the rest of the
//! run (a run acts on one decision; an approval's live run asks again).
//!
//! Fail-safe: a blocking alert that cannot be read holds the run off (a
//! maintenance window nobody can see is still a maintenance window); the
//! alert that started the run, when it cannot be read, is taken on the
//! webhook's word unless `act_if_alertmanager_down = false`.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::OnceCell;

use super::lease::{SilenceLease, SilenceLeases};
use super::{AlertSource, Matcher, Selector};
use crate::record::AlertInfo;

/// Whom Remedy's own silences name as their creator.
pub const CREATED_BY: &str = "remedy";

/// May the run act?
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Yes; with a note for the record when it took a fail-safe default.
    Act(Option<String>),
    /// No, and why (the refused actions carry it).
    Hold(String),
}

pub struct AlertGuard {
    source: Arc<dyn AlertSource>,
    /// The alert that started the run (fingerprint, labels).
    alert: Option<(String, BTreeMap<String, String>)>,
    /// Whether it must still fire.
    only_while_firing: bool,
    blockers: Vec<Selector>,
    act_if_down: bool,
    verdict: OnceCell<Verdict>,
    silence: Option<SilenceWhileActing>,
}

/// Silence the alert while acting on it (`silence_while_acting`).
pub struct SilenceWhileActing {
    pub run_id: String,
    pub lease: std::time::Duration,
    pub comment: String,
    pub leases: Arc<SilenceLeases>,
}

impl AlertGuard {
    /// The guard of a run, or `None` when there is nothing to ask.
    pub fn for_run(
        source: Option<Arc<dyn AlertSource>>,
        alert: Option<&AlertInfo>,
        only_while_firing: bool,
        act_if_down: bool,
        blockers: Vec<Selector>,
        silence: Option<SilenceWhileActing>,
    ) -> Option<AlertGuard> {
        let source = source?;
        let alert = alert.map(|a| (a.fingerprint.clone(), a.labels.clone()));
        let about_alert = alert.is_some() && (only_while_firing || silence.is_some());
        if !about_alert && blockers.is_empty() {
            return None;
        }
        Some(AlertGuard {
            source,
            alert,
            only_while_firing,
            blockers,
            act_if_down,
            verdict: OnceCell::new(),
            silence,
        })
    }

    /// The verdict, asked of Alertmanager the first time; `note` hears it
    /// then (once per run).
    pub async fn verdict(&self, note: impl FnOnce(String)) -> &Verdict {
        self.verdict
            .get_or_init(|| async {
                let mut v = self.ask().await;
                if v == Verdict::Act(None) {
                    if let Some(n) = self.silence_alert().await {
                        v = Verdict::Act(Some(n));
                    }
                }
                match &v {
                    Verdict::Act(Some(n)) => note(n.clone()),
                    Verdict::Hold(why) => note(why.clone()),
                    Verdict::Act(None) => {}
                }
                v
            })
            .await
    }

    async fn ask(&self) -> Verdict {
        for b in &self.blockers {
            match self.source.alerts(&b.matchers).await {
                Ok(firing) if !firing.is_empty() => {
                    return Verdict::Hold(format!(
                        "held off: blocking alert `{}` fires ({}); no live action while it does",
                        b.text,
                        describe(&firing[0].labels)
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    return Verdict::Hold(format!(
                        "held off: Alertmanager could not say whether blocking alert `{}` fires ({e}); blocking checks fail closed",
                        b.text
                    ))
                }
            }
        }
        let Some((fingerprint, labels)) = self.alert.as_ref().filter(|_| self.only_while_firing)
        else {
            return Verdict::Act(None);
        };
        let name = labels.get("alertname").map_or("the alert", String::as_str);
        let exact: Vec<Matcher> = labels.iter().map(|(k, v)| Matcher::eq(k, v)).collect();
        let now = match self.source.alerts(&exact).await {
            Ok(now) => now,
            Err(e) if self.act_if_down => {
                return Verdict::Act(Some(format!(
                    "Alertmanager could not say whether `{name}` still fires ({e}); acted on the webhook's word (act_if_alertmanager_down)"
                )))
            }
            Err(e) => {
                return Verdict::Hold(format!(
                    "held off: Alertmanager could not say whether `{name}` still fires ({e}), and act_if_alertmanager_down is false"
                ))
            }
        };
        let Some(alert) = now
            .iter()
            .find(|a| a.fingerprint == *fingerprint || a.labels == *labels)
        else {
            return Verdict::Hold(format!(
                "alert resolved before acting: Alertmanager no longer has `{name}` ({fingerprint}) firing"
            ));
        };
        // Silenced by a person: someone is on it, and said so.
        for id in &alert.silenced_by {
            match self.source.silence(id).await {
                Ok(s) if s.created_by != CREATED_BY => {
                    return Verdict::Hold(format!(
                        "held off: `{name}` was silenced by {} ({}) before acting",
                        s.created_by, s.comment
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    return Verdict::Hold(format!(
                    "held off: `{name}` is silenced and Alertmanager could not say by whom ({e})"
                ))
                }
            }
        }
        Verdict::Act(None)
    }
}

impl AlertGuard {
    /// Silences the run's alert until a lease from now, held in
    /// `leases` (renewed there until the service ends it); answers a note
    /// when it could not (best effort: acting is not held up for it).
    async fn silence_alert(&self) -> Option<String> {
        let s = self.silence.as_ref()?;
        let (_, labels) = self.alert.as_ref()?;
        match SilenceLease::take(self.source.clone(), labels, s.comment.clone(), s.lease).await {
            Ok(lease) => {
                s.leases.hold(&s.run_id, lease);
                None
            }
            Err(e) => Some(format!(
                "the alert was not silenced while acting ({e}): whoever it pages is paged"
            )),
        }
    }
}

fn describe(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
