//! What keeps a looping agent from flooding the approvers: calls per
//! token per minute (in this process), and proposals waiting for a human
//! per agent (counted in the store, so across replicas).

use crate::locks::MutexExt;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Calls one token may make per minute.
pub const CALLS_PER_MINUTE: usize = 60;
/// Proposals of one agent that may wait for a human at once.
pub const MAX_PENDING: usize = 5;

#[derive(Default)]
pub struct AgentLimits {
    calls: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl AgentLimits {
    /// Counts a call of `who`; `Err` says when to come back.
    pub fn call(&self, who: &str) -> Result<(), String> {
        let now = Instant::now();
        let mut calls = self.calls.locked();
        let q = calls.entry(who.to_string()).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            q.pop_front();
        }
        if q.len() >= CALLS_PER_MINUTE {
            let wait = q.front().map_or(0, |t| {
                60u64.saturating_sub(now.duration_since(*t).as_secs())
            });
            return Err(format!(
                "rate limit: {CALLS_PER_MINUTE} calls a minute per token; try again in {wait} s"
            ));
        }
        q.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_past_its_rate_is_refused_and_others_are_not() {
        let l = AgentLimits::default();
        for _ in 0..CALLS_PER_MINUTE {
            l.call("looping").unwrap();
        }
        assert!(l.call("looping").unwrap_err().contains("rate limit"));
        l.call("other").unwrap();
    }
}
