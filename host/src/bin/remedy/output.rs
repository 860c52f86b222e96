//! Human-readable output of the CLI.

use std::fmt::Write as _;
use std::path::Path;

use remedy::record::RunRecord;
use remedy::runtime::Plugin;
use remedy::service::registry::EntryView;

/// `s` safe to print on a terminal: control characters (escape sequences
/// that could rewrite the screen, retitle the window or hide text), except
/// newlines and tabs, become `?`. Records hold text from plugins and alert
/// senders.
pub fn terminal_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

use remedy::record::wire as name;

pub fn run_text(r: &RunRecord) -> String {
    let mut s = String::new();
    let mode = if r.dry_run { "dry-run" } else { "live" };
    let _ = writeln!(
        s,
        "run {} · {} {} · {} · {} in {} ms",
        r.id,
        r.plugin,
        r.plugin_version,
        mode,
        r.status.as_str(),
        r.duration_ms.unwrap_or(0)
    );
    if let Some(n) = &r.note {
        let _ = writeln!(s, "note: {n}");
    }
    if let Some(of) = &r.approval_of {
        let _ = writeln!(s, "carries out the approved plan of run {of}");
    }
    if let Some(d) = &r.detection {
        let _ = writeln!(
            s,
            "\ndetection: {}",
            if d.healthy { "healthy" } else { "UNHEALTHY" }
        );
        for f in &d.findings {
            let _ = writeln!(s, "  [{}] {}", name(&f.severity), f.summary);
            for (k, v) in &f.evidence {
                if !v.is_empty() {
                    let _ = writeln!(s, "      {k} = {v}");
                }
            }
        }
    }
    if !r.actions.is_empty() {
        let _ = writeln!(s, "\nactions:");
        for a in &r.actions {
            let _ = writeln!(
                s,
                "  {} {} → {}  ({})",
                a.kind,
                a.target,
                name(&a.applied),
                a.reason
            );
            if let Some(e) = &a.error {
                let _ = writeln!(s, "      {e}");
            }
            if let Some(r) = &a.result {
                let _ = writeln!(s, "      → {r}");
            }
        }
    }
    if let Some(o) = &r.outcome {
        let _ = writeln!(
            s,
            "\noutcome: {}{}",
            o.summary,
            if o.mitigated { " (mitigated)" } else { "" }
        );
        if !o.manual_steps.is_empty() {
            let _ = writeln!(s, "manual steps:");
            for (i, m) in o.manual_steps.iter().enumerate() {
                let _ = writeln!(s, "  {}. {m}", i + 1);
            }
        }
    }
    if let Some(a) = &r.approval {
        let _ = writeln!(s, "\nplan (expires {}):", a.expires_at.to_rfc3339());
        for p in &a.plan {
            let _ = writeln!(s, "  {} {}", p.kind, p.target);
        }
        match (&a.decision, &a.decided_by) {
            (Some(d), Some(by)) => {
                let _ = writeln!(s, "decision: {d} by {by}");
            }
            _ => {
                let _ = writeln!(s, "waiting: remedy approve {0} | remedy reject {0}", r.id);
            }
        }
        if let Some(live) = &a.live_run {
            let _ = writeln!(s, "live run: {live}");
        }
    }
    if let Some(v) = &r.verification {
        let at = r.verified_at.map(|t| t.to_rfc3339()).unwrap_or_default();
        let _ = writeln!(s, "\nverification: {v} ({at})");
    }
    if let Some(e) = &r.error {
        let _ = writeln!(s, "\nerror: {e}");
    }
    if !r.logs.is_empty() {
        let _ = writeln!(s, "\nlogs:");
        for l in &r.logs {
            let _ = writeln!(s, "  {l}");
        }
    }
    s
}

pub fn plugins_text(rows: &[EntryView]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<28} {:<8} {:<8} {:<8} {:<24} ALERTS",
        "NAME", "VERSION", "STATUS", "MODE", "GRANTS"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<28} {:<8} {:<8} {:<8} {:<24} {}",
            r.name,
            r.version.as_deref().unwrap_or("-"),
            r.status,
            r.mode.as_deref().unwrap_or("-"),
            r.grants.join(","),
            r.alerts.join(",")
        );
        if let Some(e) = &r.error {
            let _ = writeln!(s, "    error: {e}");
        }
    }
    s
}

pub fn inspect_text(file: &Path, p: &Plugin) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: valid remedy:plugin/runbook component",
        file.display()
    );
    let _ = writeln!(s, "  name:        {}", p.info.name);
    let _ = writeln!(s, "  version:     {}", p.info.version);
    let _ = writeln!(s, "  description: {}", p.info.description);
    let _ = writeln!(s, "  alerts:      {}", p.info.alerts.join(", "));
    let _ = writeln!(s, "  digest:      {}", p.digest);
    let _ = writeln!(s, "  signature:   {}", p.signed);
    let _ = writeln!(s, "  imports:");
    for i in &p.imports {
        let _ = writeln!(s, "    {i}");
    }
    s
}

pub fn runs_table(runs: &[RunRecord]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<36} {:<28} {:<16} {:<8} {:>8} STARTED",
        "ID", "PLUGIN", "STATUS", "MODE", "MS"
    );
    for r in runs {
        let _ = writeln!(
            s,
            "{:<36} {:<28} {:<16} {:<8} {:>8} {}",
            r.id,
            r.plugin,
            r.status.as_str(),
            r.mode,
            r.duration_ms
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into()),
            r.started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
    s
}
