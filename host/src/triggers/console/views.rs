//! What the pages show, gathered from the service and the store, and the
//! templates they are rendered with (compiled into the binary).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::response::Html;
use chrono::{Duration, Utc};
use serde::Serialize;

use crate::action::ActionKind;
use crate::record::{RunRecord, RunStatus, Trigger};
use crate::service::Service;
use crate::store::{RunFilter, StoreError};

static TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("error.html", include_str!("templates/error.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("run.html", include_str!("templates/run.html")),
];

fn env() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        for (name, src) in TEMPLATES {
            // A template that does not parse is a build defect, caught by
            // the console's tests before it ships.
            if let Err(e) = env.add_template(name, src) {
                tracing::error!(template = name, error = %e, "console template does not parse");
            }
        }
        env
    })
}

/// `name` rendered with `ctx` (HTML-escaped by default); a template error is
/// shown as the page, never a panic.
pub fn render(name: &str, ctx: minijinja::Value) -> Html<String> {
    let out = env()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .unwrap_or_else(|e| {
            tracing::error!(template = name, error = %e, "console page not rendered");
            format!(
                "<!doctype html><title>Remedy</title><p>This page could not be rendered: {}</p>",
                html_escape(&e.to_string())
            )
        });
    Html(out)
}

pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A run as a row of a list.
#[derive(Serialize)]
pub struct RunRow {
    pub id: String,
    pub short: String,
    pub plugin: String,
    pub status: &'static str,
    pub mode: String,
    pub dry_run: bool,
    pub started_at: String,
    pub duration_ms: Option<u64>,
    pub trigger: String,
    pub actions: usize,
    pub findings: usize,
    pub error: Option<String>,
}

impl RunRow {
    pub fn of(r: &RunRecord) -> RunRow {
        RunRow {
            id: r.id.clone(),
            short: r.id.chars().take(8).collect(),
            plugin: r.plugin.clone(),
            status: r.status.as_str(),
            mode: r.mode.as_str().to_string(),
            dry_run: r.dry_run,
            started_at: when(r.started_at),
            duration_ms: r.duration_ms,
            trigger: trigger_text(&r.trigger),
            actions: r.actions.len(),
            findings: r.detection.as_ref().map_or(0, |d| d.findings.len()),
            error: r.error.clone(),
        }
    }
}

pub fn when(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn trigger_text(t: &Trigger) -> String {
    match t {
        Trigger::Alert { alert } => format!("alert {}", alert.name),
        Trigger::Schedule { schedule, .. } => format!("schedule {schedule}"),
        Trigger::Manual { by } => format!("manual by {by}"),
    }
}

/// A firing alert and the runs it started.
#[derive(Serialize)]
pub struct AlertRow {
    pub name: String,
    pub fingerprint: String,
    pub since: String,
    pub labels: String,
    pub runs: Vec<RunRow>,
    /// Flapping: Remedy holds off until then.
    pub flapping_until: Option<String>,
}

/// One budget: what a plugin has spent of it in its window.
#[derive(Serialize)]
pub struct BudgetRow {
    pub plugin: String,
    pub kind: &'static str,
    pub used: u32,
    pub max: u32,
    pub window: String,
    /// Used / max as a percentage, for the bar.
    pub pct: u32,
}

/// Everything the overview shows.
#[derive(Serialize)]
pub struct Overview {
    pub pending: Vec<(RunRow, RunRecord)>,
    pub runs: Vec<RunRow>,
    pub alerts: Vec<AlertRow>,
    pub plugins: Vec<crate::service::registry::EntryView>,
    pub budgets: Vec<BudgetRow>,
    pub chart: String,
    pub paused: Option<crate::killswitch::Pause>,
}

/// How many of the last day's runs (the newest) are matched to the
/// firing alerts that started them.
const ALERT_RUNS: u32 = 200;

pub async fn overview(service: &Service) -> Result<Overview, StoreError> {
    let store = &service.store;
    let pending_recs = store
        .list_runs(RunFilter {
            status: Some(RunStatus::PendingApproval.as_str().into()),
            limit: Some(100),
            ..Default::default()
        })
        .await?;
    let recent = store
        .list_runs(RunFilter {
            limit: Some(50),
            ..Default::default()
        })
        .await?;
    let since = crate::record::timestamp(Utc::now() - Duration::hours(24));
    let counts = store.run_counts(&since).await?;
    let day = store
        .list_runs(RunFilter {
            since: Some(since),
            limit: Some(ALERT_RUNS),
            ..Default::default()
        })
        .await?;
    let alerts = firing(service, &day).await?;
    let mut budgets = Vec::new();
    for p in service.registry.loaded() {
        for kind in ActionKind::ALL {
            if !p.settings.grants.has(kind.capability()) {
                continue;
            }
            let b = p.settings.limits.budget(kind);
            let used = store.budget_used(p.name(), kind, b.per).await?;
            budgets.push(BudgetRow {
                plugin: p.name().to_string(),
                kind: kind.as_str(),
                used,
                max: b.max,
                window: crate::store::rules::human(b.per),
                pct: (u64::from(used) * 100 / u64::from(b.max.max(1))).min(100) as u32,
            });
        }
    }
    Ok(Overview {
        pending: pending_recs
            .iter()
            .map(|r| (RunRow::of(r), r.clone()))
            .collect(),
        runs: recent.iter().map(RunRow::of).collect(),
        alerts,
        plugins: service.registry.views(),
        budgets,
        chart: super::chart::runs_per_hour(&counts, Utc::now()),
        paused: service.paused(),
    })
}

/// Alerts whose latest notice is `firing`, with the runs (of the last day)
/// they started.
async fn firing(service: &Service, day: &[RunRecord]) -> Result<Vec<AlertRow>, StoreError> {
    let received = service.store.list_alerts(500).await?;
    let flapping = service.flapping_alerts().await?;
    // Newest first: the first notice of a fingerprint is its state.
    let mut latest: BTreeMap<&str, &crate::store::StoredAlert> = BTreeMap::new();
    for a in &received {
        latest.entry(a.fingerprint.as_str()).or_insert(a);
    }
    let mut rows: Vec<AlertRow> = latest
        .values()
        .filter(|a| a.status == "firing")
        .map(|a| {
            let labels = a.alert["labels"]
                .as_object()
                .map(|l| {
                    l.iter()
                        .filter(|(k, _)| *k != "alertname")
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            AlertRow {
                name: a.name.clone(),
                fingerprint: a.fingerprint.clone(),
                since: a.starts_at.clone(),
                labels,
                runs: day
                    .iter()
                    .filter(|r| matches!(&r.trigger, Trigger::Alert { alert } if alert.fingerprint == a.fingerprint))
                    .map(RunRow::of)
                    .collect(),
                flapping_until: flapping
                    .get(&a.fingerprint)
                    .map(|f| f["until"].as_str().unwrap_or("?").to_string()),
            }
        })
        .collect();
    rows.sort_by(|a, b| b.since.cmp(&a.since));
    Ok(rows)
}

/// Markdown (the post-incident report) as HTML. Raw HTML in it is shown as
/// text, and links and images as their text: the report quotes what plugins
/// and alert senders wrote, and nothing in it should look like something to
/// click on the page where plans are approved.
pub fn markdown_html(md: &str) -> String {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
    let events = Parser::new_ext(md, Options::ENABLE_TABLES).filter_map(|e| match e {
        Event::Html(h) | Event::InlineHtml(h) => Some(Event::Text(h)),
        Event::Start(Tag::Link { .. } | Tag::Image { .. })
        | Event::End(TagEnd::Link | TagEnd::Image) => None,
        e => Some(e),
    });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, events);
    out
}

/// One line of Markdown (a timeline step) as inline HTML.
pub fn markdown_inline(md: &str) -> String {
    let html = markdown_html(md);
    let html = html.trim_end();
    html.strip_prefix("<p>")
        .and_then(|h| h.strip_suffix("</p>"))
        .unwrap_or(html)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_html_in_a_report_is_text() {
        let html = markdown_html(
            "# T\n\n<script>alert(1)</script>\n\n| a |\n|---|\n| <img src=x onerror=y> |\n",
        );
        assert!(
            !html.contains("<script>") && !html.contains("<img"),
            "{html}"
        );
        assert!(
            html.contains("&lt;script&gt;") && html.contains("<table>"),
            "{html}"
        );
        let html = markdown_inline(
            "x [Approve now](https://evil/login) <javascript:alert(1)> ![i](data:x)",
        );
        assert!(!html.contains("<a ") && !html.contains("<img"), "{html}");
        assert!(html.contains("Approve now"), "the text stays: {html}");
        assert_eq!(
            markdown_inline("Action `x` on <b>y</b>: **executed**"),
            "Action <code>x</code> on &lt;b&gt;y&lt;/b&gt;: <strong>executed</strong>"
        );
    }

    #[test]
    fn every_template_parses() {
        let mut fresh = minijinja::Environment::new();
        for (name, src) in TEMPLATES {
            if let Err(e) = fresh.add_template(name, src) {
                panic!("{name}: {e:#}");
            }
            assert!(env().get_template(name).is_ok(), "{name}");
        }
    }
}
