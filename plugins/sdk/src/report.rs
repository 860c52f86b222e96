//! Building findings and summarising the actions a mitigation took.

use crate::{Applied, Error, Finding, Severity};

/// A finding with evidence given as `(name, value)` pairs.
pub fn finding(
    severity: Severity,
    summary: impl Into<String>,
    evidence: &[(&str, String)],
) -> Finding {
    Finding {
        severity,
        summary: summary.into(),
        evidence: evidence
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

/// Tally of the gated actions a mitigation attempted.
#[derive(Default, Debug)]
pub struct Actions {
    pub executed: u32,
    pub simulated: u32,
    pub not_done: Vec<String>,
}

impl Actions {
    /// Records the answer of one mutating host call about `target`.
    pub fn record(
        &mut self,
        target: &str,
        answer: Result<Applied, Error>,
    ) -> Result<Applied, Error> {
        match &answer {
            Ok(Applied::Executed) => self.executed += 1,
            Ok(Applied::Simulated) => self.simulated += 1,
            Err(e) => self
                .not_done
                .push(format!("{target}: {}", crate::error_text(e))),
        }
        answer
    }

    /// Actions that were carried out or would have been in dry-run.
    pub fn attempted(&self) -> u32 {
        self.executed + self.simulated
    }
}
