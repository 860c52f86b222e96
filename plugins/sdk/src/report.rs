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

/// A finding's evidence value for a long list (keys, names): its first ten
/// items, comma-separated.
pub fn sample(items: &[String]) -> String {
    items
        .iter()
        .take(10)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Tally of the gated actions a mitigation attempted.
///
/// With a per-run limit ([`Actions::limited`]) the mitigation offers every
/// target to [`Actions::try_act`]; past the limit the targets are only
/// counted, for the manual step that hands them over:
///
/// ```ignore
/// let mut actions = Actions::limited(s.max_deletions);
/// for key in &keys {
///     actions.try_act(key, || cache::delete(key, "breaks tenant isolation"));
/// }
/// if actions.left() > 0 { /* "N more key(s) left (max_deletions=…)" */ }
/// manual_steps.extend(actions.not_done_steps("Not deleted: "));
/// ```
#[derive(Default, Debug)]
pub struct Actions {
    /// Carried out against the real system.
    pub executed: u32,
    /// Recorded, not carried out (dry run).
    pub simulated: u32,
    /// `target: kind: message` of each action the host answered with an error.
    pub not_done: Vec<String>,
    /// Targets [`Actions::try_act`] did not act on: the limit was reached.
    pub past_limit: Vec<String>,
    limit: Option<u64>,
}

impl Actions {
    /// A tally whose [`Actions::try_act`] attempts at most `max` actions
    /// (executed or simulated; a failed one does not count).
    pub fn limited(max: u64) -> Self {
        Self {
            limit: Some(max),
            ..Self::default()
        }
    }

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

    /// Makes the host call `act` about `target` and records its answer, or,
    /// once the limit is reached, leaves `target` alone (`None`, and it
    /// joins [`Actions::past_limit`]).
    pub fn try_act(
        &mut self,
        target: &str,
        act: impl FnOnce() -> Result<Applied, Error>,
    ) -> Option<Result<Applied, Error>> {
        if self
            .limit
            .is_some_and(|max| u64::from(self.attempted()) >= max)
        {
            self.past_limit.push(target.to_string());
            return None;
        }
        Some(self.record(target, act()))
    }

    /// Actions that were carried out or would have been in dry-run.
    pub fn attempted(&self) -> u32 {
        self.executed + self.simulated
    }

    /// What a summary reports as done: `simulated` in a dry run, else
    /// `executed`.
    pub fn done(&self, dry_run: bool) -> u32 {
        if dry_run {
            self.simulated
        } else {
            self.executed
        }
    }

    /// Targets still to be handled: the failed ones and those past the limit.
    pub fn left(&self) -> usize {
        self.not_done.len() + self.past_limit.len()
    }

    /// The failed actions as manual steps, `<prefix><target>: <error>` each.
    pub fn not_done_steps<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = String> + 'a {
        self.not_done.iter().map(move |n| format!("{prefix}{n}"))
    }
}
