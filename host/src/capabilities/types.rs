//! Conversions between the WIT types and the run record's.

use crate::bindings::types as wit;
use crate::record::{self, Trigger};

use super::HostCtx;

/// `types` has no functions; the linker still wants its (empty) host trait.
impl wit::Host for HostCtx {}

pub fn context(
    run_id: &str,
    trigger: &Trigger,
    config: &[(String, String)],
    dry_run: bool,
) -> wit::Context {
    wit::Context {
        run_id: run_id.to_string(),
        trigger: match trigger {
            Trigger::Alert { alert } => wit::Trigger::Alert(wit::Alert {
                name: alert.name.clone(),
                firing: alert.firing,
                labels: alert.labels.clone().into_iter().collect(),
                annotations: alert.annotations.clone().into_iter().collect(),
                starts_at: alert.starts_at.clone(),
                fingerprint: alert.fingerprint.clone(),
            }),
            Trigger::Schedule { schedule, .. } => wit::Trigger::Schedule(schedule.clone()),
            Trigger::Manual { by } => wit::Trigger::Manual(by.clone()),
        },
        config: config.to_vec(),
        dry_run,
    }
}

pub use crate::record::{caps, cut};

/// The detection as the record keeps it, and notes on what was cut.
pub fn detection(d: &wit::Detection) -> (record::Detection, Vec<String>) {
    let mut notes = Vec::new();
    let mut budget = caps::EVIDENCE_TOTAL;
    let mut cut_values = 0usize;
    let mut cut_entries = 0usize;
    let findings = d
        .findings
        .iter()
        .take(caps::FINDINGS)
        .map(|f| {
            cut_entries += f.evidence.len().saturating_sub(caps::EVIDENCE_ENTRIES);
            let evidence = f
                .evidence
                .iter()
                .take(caps::EVIDENCE_ENTRIES)
                .map(|(k, v)| {
                    let v = cut(v, caps::EVIDENCE_VALUE.min(budget));
                    if v.ends_with('…') {
                        cut_values += 1;
                    }
                    budget = budget.saturating_sub(v.len());
                    (cut(k, caps::EVIDENCE_KEY), v)
                })
                .collect();
            record::Finding {
                severity: match f.severity {
                    wit::Severity::Info => record::Severity::Info,
                    wit::Severity::Warning => record::Severity::Warning,
                    wit::Severity::Critical => record::Severity::Critical,
                },
                summary: cut(&f.summary, caps::LINE),
                evidence,
            }
        })
        .collect();
    if d.findings.len() > caps::FINDINGS {
        notes.push(format!(
            "[remedy] {} findings returned; the first {} kept",
            d.findings.len(),
            caps::FINDINGS
        ));
    }
    if cut_entries > 0 || cut_values > 0 {
        notes.push(format!(
            "[remedy] evidence cut: {cut_entries} entries past {} per finding dropped, {cut_values} values shortened (at most {} bytes each, {} in all)",
            caps::EVIDENCE_ENTRIES,
            caps::EVIDENCE_VALUE,
            caps::EVIDENCE_TOTAL
        ));
    }
    (
        record::Detection {
            healthy: d.healthy,
            findings,
        },
        notes,
    )
}

/// The outcome as the record keeps it, and notes on what was cut.
pub fn outcome(o: wit::Outcome) -> (record::Outcome, Vec<String>) {
    let mut notes = Vec::new();
    if o.manual_steps.len() > caps::MANUAL_STEPS {
        notes.push(format!(
            "[remedy] {} manual steps returned; the first {} kept",
            o.manual_steps.len(),
            caps::MANUAL_STEPS
        ));
    }
    (
        record::Outcome {
            summary: cut(&o.summary, caps::OUTCOME_SUMMARY),
            mitigated: o.mitigated,
            manual_steps: o
                .manual_steps
                .iter()
                .take(caps::MANUAL_STEPS)
                .map(|m| cut(m, caps::LINE))
                .collect(),
        },
        notes,
    )
}
