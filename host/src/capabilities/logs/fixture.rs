//! `[answers.logs.NAME]`: a log source's lines in a fixture's world, and
//! the lines a recorder saw (the writer redacts them like every string).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::backend::LogsBackend;
use crate::backends::{BackendError, BackendResult};
use crate::capabilities::world::{unconfigured, Recorder, World};

/// Source name → its lines.
pub type Answers = BTreeMap<String, LogAnswer>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogAnswer {
    /// The file's lines, oldest first.
    #[serde(default)]
    pub lines: Vec<String>,
    /// The file cannot be read: `error = "…"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[async_trait]
impl LogsBackend for World {
    fn has_source(&self, source: &str) -> bool {
        self.answers()
            .logs
            .as_ref()
            .is_some_and(|l| l.contains_key(source))
    }

    async fn tail(&self, source: &str, lines: usize) -> BackendResult<Vec<String>> {
        let answer = self
            .answers()
            .logs
            .as_ref()
            .and_then(|l| l.get(source).cloned());
        let Some(a) = answer else {
            return self.missing(
                format!("logs.tail({source:?})"),
                &format!("[answers.logs.{source}] lines = […]"),
            );
        };
        if let Some(e) = a.error {
            return Err(BackendError::Unavailable(e));
        }
        let skip = a.lines.len().saturating_sub(lines);
        Ok(a.lines[skip..].to_vec())
    }
}

#[async_trait]
impl LogsBackend for Recorder {
    fn has_source(&self, source: &str) -> bool {
        self.real
            .logs
            .as_ref()
            .is_some_and(|l| l.has_source(source))
    }

    async fn tail(&self, source: &str, lines: usize) -> BackendResult<Vec<String>> {
        let Some(real) = &self.real.logs else {
            return unconfigured("logs");
        };
        let r = real.tail(source, lines).await;
        let answer = match &r {
            Ok(l) => LogAnswer {
                lines: l.clone(),
                error: None,
            },
            Err(e) => LogAnswer {
                lines: vec![],
                error: Some(e.to_string()),
            },
        };
        let mut a = self.answers();
        let kept = a.logs.get_or_insert_with(Default::default);
        // The longest tail read is the one a replay needs.
        let longer = kept
            .get(source)
            .is_none_or(|k| k.lines.len() <= answer.lines.len());
        if longer {
            kept.insert(source.to_string(), answer);
        }
        r
    }
}

impl crate::capabilities::PublicValues for Answers {}
