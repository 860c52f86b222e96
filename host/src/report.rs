//! The seed's post-incident review as Markdown, written from the store: a
//! timeline of the alert, detection, every action, the approval and the
//! verification; findings as root-cause evidence; the fixes applied; the
//! manual steps as follow-ups. What only people know (impact in business
//! terms, lessons learned) is left as headed blanks to fill in.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::record::{Applied, RunRecord, Trigger};
use crate::store::{AuditFilter, SqliteStore, StoreError};

/// The report of run `id` (with the plan or live run it is linked to).
pub async fn for_run(store: &SqliteStore, id: &str) -> Result<Option<String>, StoreError> {
    let Some(rec) = store.get_run(id).await? else {
        return Ok(None);
    };
    // A plan and its live run tell one story: report both, plan first.
    let (plan, live) = match (&rec.approval, &rec.approval_of) {
        (Some(a), _) => {
            let live = match &a.live_run {
                Some(l) => store.get_run(l).await?,
                None => None,
            };
            (Some(rec.clone()), live)
        }
        (None, Some(of)) => (store.get_run(of).await?, Some(rec.clone())),
        (None, None) => (None, Some(rec.clone())),
    };
    let mut runs: Vec<RunRecord> = plan.into_iter().chain(live).collect();
    runs.sort_by_key(|r| r.started_at);
    let mut audit = Vec::new();
    for r in &runs {
        audit.extend(
            store
                .list_audit(AuditFilter {
                    run: Some(r.id.clone()),
                    ..AuditFilter::default()
                })
                .await?,
        );
    }
    Ok(Some(markdown(&runs, &audit)))
}

fn when(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One line of the timeline.
struct Step {
    at: DateTime<Utc>,
    text: String,
}

fn timeline(runs: &[RunRecord], audit: &[crate::store::AuditEvent]) -> Vec<Step> {
    let mut steps = Vec::new();
    for r in runs {
        if let Trigger::Alert { alert } = &r.trigger {
            if let Ok(t) = DateTime::parse_from_rfc3339(&alert.starts_at) {
                let text = format!("Alert `{}` started firing", alert.name);
                if !steps.iter().any(|s: &Step| s.text == text) {
                    steps.push(Step {
                        at: t.with_timezone(&Utc),
                        text,
                    });
                }
            }
        }
        steps.push(Step {
            at: r.started_at,
            text: format!(
                "Run `{}` of {} {} started ({}); detection: {}",
                r.id,
                r.plugin,
                r.plugin_version,
                r.mode,
                match &r.detection {
                    Some(d) if d.healthy => "healthy".to_string(),
                    Some(d) => format!("unhealthy, {} finding(s)", d.findings.len()),
                    None => "none".to_string(),
                }
            ),
        });
        for a in &r.actions {
            steps.push(Step {
                at: a.at,
                text: format!(
                    "Action `{}` on `{}`: **{}**{}",
                    a.kind,
                    a.target,
                    serde_json::to_value(a.applied)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                    a.error
                        .as_ref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ),
            });
        }
        if let Some(t) = r.finished_at {
            steps.push(Step {
                at: t,
                text: format!(
                    "Run `{}` finished: {}{}",
                    r.id,
                    r.status.as_str(),
                    r.outcome
                        .as_ref()
                        .map(|o| format!(" — {}", o.summary))
                        .unwrap_or_default()
                ),
            });
        }
        if let Some(a) = &r.approval {
            if let (Some(d), Some(t)) = (&a.decision, a.decided_at) {
                steps.push(Step {
                    at: t,
                    text: format!(
                        "Plan {d} by {}",
                        a.decided_by.as_deref().unwrap_or("unknown")
                    ),
                });
            }
        }
    }
    for e in audit.iter().filter(|e| e.event == "verification") {
        if let Ok(t) = DateTime::parse_from_rfc3339(&e.at) {
            steps.push(Step {
                at: t.with_timezone(&Utc),
                text: format!(
                    "Verification: **{}**",
                    e.detail["result"].as_str().unwrap_or("?")
                ),
            });
        }
    }
    steps.sort_by_key(|s| s.at);
    steps
}

/// `s` made inert inside one line of Markdown: what a plugin or an alert
/// sender wrote cannot start a heading, break a table, close a code span,
/// make a link or smuggle HTML into the review.
pub fn inert(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            c if c.is_control() => out.push(' '),
            '`' => out.push('\''),
            '|' => out.push_str("\\|"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '[' => out.push_str("\\["),
            ']' => out.push_str("\\]"),
            c => out.push(c),
        }
    }
    out
}

/// Every string of a record that came from outside Remedy, made inert.
fn inert_record(r: &RunRecord) -> RunRecord {
    let mut r = r.clone();
    let f = |s: &mut String| *s = inert(s);
    if let Trigger::Alert { alert } = &mut r.trigger {
        f(&mut alert.name);
        for v in alert
            .labels
            .values_mut()
            .chain(alert.annotations.values_mut())
        {
            f(v);
        }
    }
    if let Some(d) = r.detection.as_mut() {
        for finding in &mut d.findings {
            f(&mut finding.summary);
            finding.evidence = std::mem::take(&mut finding.evidence)
                .into_iter()
                .map(|(k, v)| (inert(&k), inert(&v)))
                .collect();
        }
    }
    if let Some(o) = r.outcome.as_mut() {
        f(&mut o.summary);
        o.manual_steps.iter_mut().for_each(f);
    }
    for a in &mut r.actions {
        f(&mut a.reason);
        f(&mut a.target);
        if let Some(e) = a.error.as_mut() {
            f(e);
        }
    }
    if let Some(e) = r.error.as_mut() {
        f(e);
    }
    if let Some(n) = r.note.as_mut() {
        f(n);
    }
    r
}

/// The review of `runs` (oldest first) with their audit events.
pub fn markdown(runs: &[RunRecord], audit: &[crate::store::AuditEvent]) -> String {
    let runs: Vec<RunRecord> = runs.iter().map(inert_record).collect();
    let runs = &runs[..];
    let mut s = String::new();
    let Some(first) = runs.first() else {
        return s;
    };
    let title = match &first.trigger {
        Trigger::Alert { alert } => alert.name.clone(),
        _ => first.plugin.clone(),
    };
    let _ = writeln!(s, "# Post-incident review: {title}\n");
    let _ = writeln!(
        s,
        "Plugin `{}` {} (`{}`); written by Remedy from its store.\n",
        first.plugin, first.plugin_version, first.plugin_digest
    );

    let _ = writeln!(s, "## 1. Timeline\n");
    let _ = writeln!(s, "| time (UTC) | event |\n|---|---|");
    for step in timeline(runs, audit) {
        let _ = writeln!(
            s,
            "| {} | {} |",
            when(step.at),
            step.text.replace('|', "\\|")
        );
    }

    let _ = writeln!(s, "\n## 2. Root cause (evidence)\n");
    let findings: Vec<_> = runs
        .iter()
        .filter_map(|r| r.detection.as_ref())
        .flat_map(|d| d.findings.iter())
        .collect();
    if findings.is_empty() {
        let _ = writeln!(s, "No findings were recorded.");
    }
    for f in findings {
        let sev = serde_json::to_value(f.severity)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let _ = writeln!(s, "- **{sev}**: {}", f.summary);
        for (k, v) in &f.evidence {
            let _ = writeln!(s, "  - {k}: `{v}`");
        }
    }

    let _ = writeln!(
        s,
        "\n## 3. Impact\n\n_To be filled in: users and business affected._"
    );

    let _ = writeln!(s, "\n## 4. Fixes applied\n");
    let fixes: Vec<_> = runs
        .iter()
        .flat_map(|r| r.actions.iter())
        .filter(|a| a.applied == Applied::Executed)
        .collect();
    if fixes.is_empty() {
        let _ = writeln!(s, "None by Remedy.");
    }
    for a in fixes {
        let _ = writeln!(
            s,
            "- `{}` on `{}` at {}: {}",
            a.kind,
            a.target,
            when(a.at),
            a.reason
        );
    }
    let verification = runs.iter().rev().find_map(|r| r.verification.clone());
    if let Some(v) = verification {
        let _ = writeln!(s, "\nVerification after mitigation: **{v}**.");
    }

    let _ = writeln!(s, "\n## 5. Long-term fixes (follow-ups)\n");
    let steps: Vec<&String> = runs
        .iter()
        .filter_map(|r| r.outcome.as_ref())
        .flat_map(|o| o.manual_steps.iter())
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for m in steps.into_iter().filter(|m| seen.insert(m.as_str())) {
        let _ = writeln!(s, "- [ ] {m}");
    }
    for a in runs.iter().flat_map(|r| r.actions.iter()) {
        let what = match a.applied {
            Applied::Failed => "failed",
            Applied::Interrupted => "was interrupted",
            Applied::Unknown => "was sent and never answered",
            _ => continue,
        };
        let _ = writeln!(
            s,
            "- [ ] Check `{}` on `{}` by hand: it {what}",
            a.kind, a.target
        );
    }

    let _ = writeln!(
        s,
        "\n## 6. Lessons learned\n\n_To be filled in: what went well, what could improve._"
    );
    s
}
