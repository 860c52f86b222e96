//! `logs`: the last lines of a log source the operator configured
//! (`[backends.logs.NAME]`), read-only, scoped by source name
//! (`scope.log_sources`), filtered and counted here so that the guest gets
//! answers, not megabytes. Every line is redacted (secret-shaped values
//! become placeholders) before a plugin, and so a record, sees it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use crate::bindings::remedy::plugin::logs::{Host, PatternCount};
use crate::bindings::types::Error;
use crate::config::BackendsConfig;
use crate::grants::{any_match, Capability};
use crate::redact::Redactor;

use super::{HostCtx, Wiring};

pub mod backend;
pub mod files;
pub mod fixture;

use backend::{LogsBackend, MAX_LINES};

const LOGS: Wiring = Wiring {
    cap: Capability::Logs,
    name: "the log source",
    key: "logs.NAME",
    env: "no environment variable (log sources are files)",
};

/// Most matching lines `grep` answers.
const MAX_GREP: u32 = 1_000;
/// Most groups `count` answers.
const MAX_GROUPS: u32 = 100;
/// Longest pattern, and the most memory its compiled form may take.
const MAX_PATTERN: usize = 512;
const REGEX_SIZE: usize = 1 << 20;

/// The sources `[backends.logs.*]` configures, if any.
pub fn from_config(
    cfg: &BackendsConfig,
    _timeout: Duration,
) -> anyhow::Result<Option<Arc<dyn LogsBackend>>> {
    if cfg.logs.is_empty() {
        return Ok(None);
    }
    let paths = cfg
        .logs
        .iter()
        .map(|(name, s)| (name.clone(), s.path.get().to_path_buf()))
        .collect();
    Ok(Some(Arc::new(
        files::FileLogs::new(&paths).map_err(anyhow::Error::msg)?,
    )))
}

/// A plugin's pattern, compiled with bounds: the `regex` crate runs in
/// linear time, and the size limit stops a pattern built to blow up.
fn pattern(p: &str) -> Result<Regex, Error> {
    if p.len() > MAX_PATTERN {
        return Err(Error::Invalid(format!(
            "pattern of {} bytes: at most {MAX_PATTERN}",
            p.len()
        )));
    }
    regex::RegexBuilder::new(p)
        .size_limit(REGEX_SIZE)
        .dfa_size_limit(REGEX_SIZE)
        .build()
        .map_err(|e| Error::Invalid(format!("pattern `{p}`: {e}")))
}

/// Lines as a plugin may see them: secret-shaped values replaced.
fn redacted(lines: Vec<String>) -> Vec<String> {
    let mut r = Redactor::new();
    lines.into_iter().map(|l| r.text("logs", &l)).collect()
}

/// The groups of `re` in `lines`, most frequent first (ties by key).
pub fn count_matches(re: &Regex, lines: &[String], limit: usize) -> Vec<PatternCount> {
    let mut groups: HashMap<String, (u32, &str)> = HashMap::new();
    for line in lines {
        let Some(c) = re.captures(line) else {
            continue;
        };
        let key = if c.len() > 1 {
            let parts: Vec<&str> = c.iter().skip(1).flatten().map(|m| m.as_str()).collect();
            parts.join(" ")
        } else {
            c[0].to_string()
        };
        let e = groups.entry(key).or_insert((0, line));
        e.0 += 1;
    }
    let mut out: Vec<PatternCount> = groups
        .into_iter()
        .map(|(key, (count, example))| PatternCount {
            key,
            count,
            example: example.to_string(),
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    out.truncate(limit);
    out
}

impl HostCtx {
    /// The redacted last `lines` lines of a source the plugin may read.
    async fn log_tail(
        &self,
        function: &'static str,
        source: &str,
        lines: u32,
    ) -> Result<Vec<String>, Error> {
        self.granted(Capability::Logs)?;
        let allowed = self
            .gate
            .grants
            .scope
            .log_sources
            .as_deref()
            .unwrap_or_default();
        if !any_match(allowed, source) {
            let msg = format!(
                "log source `{source}` is outside the scope granted to {} (scope.log_sources)",
                self.gate.plugin
            );
            return Err(Error::Denied(msg));
        }
        let logs = self.configured(&LOGS, &self.backends.logs)?;
        if !logs.has_source(source) {
            return Err(Error::Unavailable(format!(
                "no log source `{source}`: set backends.logs.{source}.path in remedy.toml"
            )));
        }
        let want = (lines as usize).min(MAX_LINES);
        let raw = self
            .read(&LOGS, function, source, logs.tail(source, want))
            .await?;
        Ok(redacted(raw))
    }
}

impl Host for HostCtx {
    async fn tail(&mut self, source: String, lines: u32) -> Result<Vec<String>, Error> {
        self.log_tail("tail", &source, lines).await
    }

    async fn grep(
        &mut self,
        source: String,
        lines: u32,
        pattern: String,
        limit: u32,
    ) -> Result<Vec<String>, Error> {
        let re = self::pattern(&pattern)?;
        let all = self.log_tail("grep", &source, lines).await?;
        let mut hits: Vec<String> = all.into_iter().filter(|l| re.is_match(l)).collect();
        let keep = limit.min(MAX_GREP) as usize;
        let drop = hits.len().saturating_sub(keep);
        hits.drain(..drop);
        Ok(hits)
    }

    async fn count(
        &mut self,
        source: String,
        lines: u32,
        pattern: String,
        limit: u32,
    ) -> Result<Vec<PatternCount>, Error> {
        let re = self::pattern(&pattern)?;
        let all = self.log_tail("count", &source, lines).await?;
        Ok(count_matches(&re, &all, limit.min(MAX_GROUPS) as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_group_by_captures_most_frequent_first() {
        let lines: Vec<String> = [
            "GET /pay 502 12ms",
            "GET /pay 502 15ms",
            "GET /cart 500 3ms",
            "GET /home 200 1ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let re = pattern(r" (/\S*) (5\d\d) ").unwrap();
        let got = count_matches(&re, &lines, 10);
        let keys: Vec<(&str, u32)> = got.iter().map(|c| (c.key.as_str(), c.count)).collect();
        assert_eq!(keys, [("/pay 502", 2), ("/cart 500", 1)]);
        assert_eq!(got[0].example, "GET /pay 502 12ms");
        // Without groups the match is the key; the limit holds.
        let re = pattern(r"5\d\d").unwrap();
        let got = count_matches(&re, &lines, 1);
        assert_eq!((got[0].key.as_str(), got[0].count), ("502", 2));
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn hostile_patterns_are_invalid_not_slow() {
        assert!(matches!(pattern("("), Err(Error::Invalid(_))));
        assert!(matches!(pattern(&"a".repeat(600)), Err(Error::Invalid(_))));
        // A pattern whose compiled form is huge is refused by the size limit.
        assert!(matches!(
            pattern(r"\w{1000}\w{1000}\w{1000}"),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn secrets_in_lines_are_redacted() {
        let got = redacted(vec![
            "POST https://api.example.com/v1?token=abcd1234efgh5678ijkl9012 -> 500".into(),
            "auth Bearer sk_live_51HxAbCdEfGhIjKlMnOp failed".into(),
        ]);
        assert!(!got[0].contains("abcd1234efgh5678ijkl9012"), "{got:?}");
        assert!(!got[1].contains("51HxAbCdEfGhIjKlMnOp"), "{got:?}");
        assert!(got[0].ends_with("-> 500"), "{got:?}");
    }
}
