//! The console's pages: the overview, a run, and the vendored assets.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::guard::Checked;
use super::session::error_page;
use super::views::{self, render, RunRow};
use crate::triggers::http::AppState;

pub(super) async fn overview(
    State(s): State<Arc<AppState>>,
    Checked(session): Checked,
) -> Response {
    match views::overview(&s.service).await {
        Ok(o) => render(
            "overview.html",
            minijinja::context! { o, ..session.page("overview") },
        )
        .into_response(),
        Err(e) => error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the store could not be read: {e}"),
        ),
    }
}

pub(super) async fn run(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    Checked(session): Checked,
) -> Response {
    let story = match crate::report::story(s.service.store.as_ref(), &id).await {
        Ok(Some(story)) => story,
        Ok(None) => return error_page(StatusCode::NOT_FOUND, &format!("no run with id `{id}`")),
        Err(e) => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the store could not be read: {e}"),
            )
        }
    };
    let (runs, audit) = story;
    let Some(rec) = runs.iter().find(|r| r.id == id).cloned() else {
        return error_page(StatusCode::NOT_FOUND, &format!("no run with id `{id}`"));
    };
    // As in the report: what plugins and alert senders wrote is made inert
    // before it is read as Markdown.
    let inert: Vec<_> = runs.iter().map(crate::report::inert_record).collect();
    let timeline: Vec<_> = crate::report::timeline(&inert, &audit)
        .into_iter()
        .map(|st| minijinja::context! { at => views::when(st.at), html => views::markdown_inline(&st.text) })
        .collect();
    let linked: Vec<RunRow> = runs.iter().filter(|r| r.id != id).map(RunRow::of).collect();
    let report = views::markdown_html(&crate::report::markdown(&runs, &audit));
    let pending = rec.status == crate::record::RunStatus::PendingApproval;
    let trace_link = match (&rec.trace_id, &s.service.remedy.config.telemetry.trace_url) {
        (Some(id), Some(url)) => Some(url.replace("{trace_id}", id)),
        _ => None,
    };
    render(
        "run.html",
        minijinja::context! {
            row => RunRow::of(&rec),
            finished_at => rec.finished_at.map(views::when),
            pending,
            trace_link,
            rec,
            timeline,
            linked,
            report,
            ..session.page("run")
        },
    )
    .into_response()
}

/// The console's own script and style, compiled in: nothing is fetched
/// from elsewhere.
pub(super) async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (
            include_str!("assets/console.css"),
            "text/css; charset=utf-8",
        ),
        "console.js" => (
            include_str!("assets/console.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return error_page(StatusCode::NOT_FOUND, "no such asset"),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}
