//! The seed's post-incident review as Markdown, written from the store: a
//! timeline of the alert, detection, every action, the approval and the
//! verification; findings as root-cause evidence; the fixes applied; the
//! manual steps as follow-ups. What only people know (impact in business
//! terms, lessons learned) is left as headed blanks to fill in.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::record::{Applied, RunRecord, Trigger};
use crate::store::{AuditFilter, Store, StoreError};

/// The report of run `id` (with the plan or live run it is linked to).
pub async fn for_run(store: &dyn Store, id: &str) -> Result<Option<String>, StoreError> {
    Ok(story(store, id)
        .await?
        .map(|(runs, audit)| markdown(&runs, &audit)))
}

/// Run `id` and the plan or live run it is linked to, oldest first, with
/// their audit events: what a report (or the console's run page) tells.
pub async fn story(
    store: &dyn Store,
    id: &str,
) -> Result<Option<(Vec<RunRecord>, Vec<crate::store::AuditEvent>)>, StoreError> {
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
    Ok(Some((runs, audit)))
}

fn when(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One line of the timeline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub at: DateTime<Utc>,
    /// Markdown-light: code spans in backticks.
    pub text: String,
}

/// The alert, detection, each action, the approval, verification and
/// escalations of `runs`, in time order.
pub fn timeline(runs: &[RunRecord], audit: &[crate::store::AuditEvent]) -> Vec<Step> {
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
                    crate::record::wire(&a.applied),
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
pub fn inert_record(r: &RunRecord) -> RunRecord {
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

    // A plan an AI agent proposed says so, with the agent's reason as
    // inert text (a code span: no markup of the agent's reaches the review).
    if let Trigger::Manual { by } = &first.trigger {
        if by.starts_with("agent:") {
            let _ = writeln!(
                s,
                "Proposed by an AI agent over MCP: `{}`.\n",
                by.replace(['`', '\n', '\r'], " ")
            );
        }
    }

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
        let sev = crate::record::wire(&f.severity);
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
            "- `{}` on `{}` at {}: {}{}",
            a.kind,
            a.target,
            when(a.at),
            a.reason,
            a.result
                .as_deref()
                .map(|r| format!(" → {r}"))
                .unwrap_or_default()
        );
    }
    let verification = runs.iter().rev().find_map(|r| r.verification);
    if let Some(v) = verification {
        let _ = writeln!(s, "\nVerification after mitigation: **{v}**.");
    }
    for id in runs.iter().filter_map(|r| r.silence.as_deref()) {
        let _ = writeln!(
            s,
            "\nThe alert was silenced in Alertmanager while Remedy acted (silence `{id}`), until verification."
        );
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;

    use super::*;
    use crate::record::{
        ActionKind, ActionRecord, AlertInfo, Detection, Finding, Outcome, PluginRef, RunStatus,
        Severity,
    };
    use crate::store::AuditEvent;

    fn at(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 3, 0, s).unwrap()
    }

    fn action(kind: ActionKind, target: &str, applied: Applied, s: u32) -> ActionRecord {
        ActionRecord {
            kind,
            target: target.into(),
            reason: "pool exhausted".into(),
            applied,
            error: (applied == Applied::Failed).then(|| "failed: session gone".into()),
            at: at(s),
            incident: None,
            result: None,
        }
    }

    fn run() -> RunRecord {
        let plugin = PluginRef {
            name: "db-connection-exhaustion".into(),
            version: "1.0.0".into(),
            digest: "sha256:ab".into(),
        };
        let alert = AlertInfo {
            name: "DatabaseConnectionExhaustion".into(),
            firing: true,
            labels: BTreeMap::from([("service".into(), "api | <b>x</b>".into())]),
            annotations: BTreeMap::new(),
            starts_at: "2026-11-27T02:59:00Z".into(),
            fingerprint: "f".into(),
        };
        let mut r = RunRecord::begin(
            "run-1".into(),
            &plugin,
            Trigger::Alert { alert },
            false,
            RunStatus::Succeeded,
        );
        r.started_at = at(1);
        r.finished_at = Some(at(5));
        r.detection = Some(Detection {
            healthy: false,
            findings: vec![Finding {
                severity: Severity::Critical,
                summary: "pool at 98% | see [link](http://evil)".into(),
                evidence: BTreeMap::from([("active".into(), "98".into())]),
            }],
        });
        r.actions = vec![
            action(
                ActionKind::DatabaseTerminate,
                "pid:42",
                Applied::Executed,
                2,
            ),
            action(ActionKind::DatabaseTerminate, "pid:43", Applied::Failed, 3),
            action(ActionKind::DatabaseCancel, "pid:44", Applied::Simulated, 4),
        ];
        r.outcome = Some(Outcome {
            summary: "1 leaking session ended".into(),
            mitigated: true,
            manual_steps: vec!["Fix the leak".into(), "Fix the leak".into()],
        });
        r
    }

    #[test]
    fn the_review_has_the_seed_sections_in_order() {
        let audit = [AuditEvent {
            seq: 1,
            at: "2026-11-27T03:00:40Z".into(),
            run_id: Some("run-1".into()),
            plugin: None,
            event: "verification".into(),
            detail: serde_json::json!({"result": "resolved"}),
        }];
        let mut r = run();
        r.verification = Some(crate::record::Verification::Resolved);
        let md = markdown(&[r], &audit);
        let headings: Vec<&str> = md.lines().filter(|l| l.starts_with('#')).collect();
        assert_eq!(
            headings,
            [
                "# Post-incident review: DatabaseConnectionExhaustion",
                "## 1. Timeline",
                "## 2. Root cause (evidence)",
                "## 3. Impact",
                "## 4. Fixes applied",
                "## 5. Long-term fixes (follow-ups)",
                "## 6. Lessons learned",
            ]
        );
        // The timeline is in time order: alert, run, actions, finish,
        // verification.
        let timeline: Vec<&str> = md.lines().filter(|l| l.starts_with("| 2026")).collect();
        assert_eq!(timeline.len(), 7, "{md}");
        assert!(timeline[0].contains("started firing"));
        assert!(timeline[2].contains("`database.terminate` on `pid:42`: **executed**"));
        assert!(timeline[3].contains("**failed** (failed: session gone)"));
        assert!(timeline[6].contains("Verification: **resolved**"));
        // Only what ran counts as a fix; what failed becomes a follow-up,
        // and repeated manual steps appear once.
        assert!(md.contains("- `database.terminate` on `pid:42` at 2026-11-27T03:00:02.000Z"));
        assert!(!md.contains("on `pid:44` at"));
        assert_eq!(md.matches("- [ ] Fix the leak").count(), 1);
        assert!(md.contains("- [ ] Check `database.terminate` on `pid:43` by hand: it failed"));
        assert!(md.contains("Verification after mitigation: **resolved**."));
        // What came from outside cannot make links, tables or HTML.
        assert!(
            md.contains("pool at 98% \\| see \\[link\\](http://evil)"),
            "{md}"
        );
        assert!(!md.contains("<b>"));
    }

    #[test]
    fn no_runs_no_review() {
        assert_eq!(markdown(&[], &[]), "");
    }
}
