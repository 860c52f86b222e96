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
            Trigger::Schedule { schedule } => wit::Trigger::Schedule(schedule.clone()),
            Trigger::Manual { by } => wit::Trigger::Manual(by.clone()),
        },
        config: config.to_vec(),
        dry_run,
    }
}

pub fn detection(d: &wit::Detection) -> record::Detection {
    record::Detection {
        healthy: d.healthy,
        findings: d
            .findings
            .iter()
            .map(|f| record::Finding {
                severity: match f.severity {
                    wit::Severity::Info => record::Severity::Info,
                    wit::Severity::Warning => record::Severity::Warning,
                    wit::Severity::Critical => record::Severity::Critical,
                },
                summary: f.summary.clone(),
                evidence: f.evidence.iter().cloned().collect(),
            })
            .collect(),
    }
}

pub fn outcome(o: wit::Outcome) -> record::Outcome {
    record::Outcome {
        summary: o.summary,
        mitigated: o.mitigated,
        manual_steps: o.manual_steps,
    }
}
