//! The commands that talk to a running server (`REMEDY_URL`, with
//! `REMEDY_TOKEN` as the bearer token): one HTTP client, one error shape.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use remedy::record::RunRecord;

use crate::output;

/// A run id as the server hands them out (a UUID), in its canonical
/// form: anything else would be spliced into a URL path, and
/// `x/../../admin/resume?` is not an id.
pub fn run_id(id: &str) -> anyhow::Result<String> {
    uuid::Uuid::parse_str(id.trim())
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| {
            anyhow::anyhow!(
                "`{id}` is not a run id (run ids are UUIDs, as `remedy runs` shows them)"
            )
        })
}

/// Sends `req` with the bearer token, if any; answers the body text, or an
/// error naming the server, the HTTP status and the API's message.
async fn send(server: &str, mut req: reqwest::RequestBuilder) -> anyhow::Result<String> {
    if let Ok(token) = std::env::var("REMEDY_TOKEN") {
        req = req.bearer_auth(token);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    let code = resp.status();
    let text = resp.text().await.context("reading the answer")?;
    if !code.is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(String::from))
            .unwrap_or(text);
        bail!("{server}: HTTP {code}: {msg}");
    }
    Ok(text)
}

fn url(server: &str, path: &str) -> String {
    format!("{}{path}", server.trim_end_matches('/'))
}

/// GETs `path` of a running server as JSON.
async fn get_json(
    server: &str,
    path: &str,
    query: &[(&str, String)],
) -> anyhow::Result<serde_json::Value> {
    let req = reqwest::Client::new().get(url(server, path)).query(query);
    json(&send(server, req).await?)
}

/// POSTs `body` to `path` of a running server; the answer is JSON.
async fn post_json(
    server: &str,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let req = reqwest::Client::new().post(url(server, path)).json(&body);
    json(&send(server, req).await?)
}

fn json(text: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(text).context("the server did not answer JSON")
}

pub async fn decide(server: &str, id: &str, verb: &str) -> anyhow::Result<ExitCode> {
    let body = post_json(
        server,
        &format!("/v1/runs/{id}/{verb}"),
        serde_json::json!({}),
    )
    .await?;
    let run = &body["run"];
    let plan = run["approval"]["plan"]
        .as_array()
        .map(|p| {
            p.iter()
                .map(|a| {
                    format!(
                        "  {} {}",
                        a["kind"].as_str().unwrap_or("?"),
                        a["target"].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    println!(
        "run {id}: {} by {}\nplan:\n{plan}",
        run["approval"]["decision"].as_str().unwrap_or("?"),
        run["approval"]["decided_by"].as_str().unwrap_or("?")
    );
    if let Some(live) = body["live_run"].as_str() {
        println!("live run: {live} (remedy runs {live})");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn admin(server: &str, verb: &str, body: serde_json::Value) -> anyhow::Result<ExitCode> {
    let body = post_json(server, &format!("/v1/admin/{verb}"), body).await?;
    match body["paused"].as_object() {
        Some(p) => println!(
            "paused by {} at {}{}: every run is a dry run",
            p["by"].as_str().unwrap_or("?"),
            p["at"].as_str().unwrap_or("?"),
            p["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        None => println!("not paused: runs follow their plugins' modes"),
    }
    if let Some(w) = body["warning"].as_str() {
        eprintln!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn clear_flap(server: &str, fingerprint: &str) -> anyhow::Result<ExitCode> {
    let body = post_json(
        server,
        &format!("/v1/alerts/{fingerprint}/clear-flap"),
        serde_json::json!({}),
    )
    .await?;
    println!(
        "cleared by {}: Remedy acts on {fingerprint} again",
        body["by"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn report(server: &str, id: &str, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let req = reqwest::Client::new().get(url(server, &format!("/v1/runs/{id}/report")));
    let text = send(server, req).await?;
    match out {
        Some(path) => std::fs::write(path, &text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{}", output::terminal_safe(&text)),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn show_run(server: &str, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let body = get_json(server, &format!("/v1/runs/{id}"), &[]).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let run: RunRecord = serde_json::from_value(body).context("unexpected run record")?;
    print!("{}", output::terminal_safe(&output::run_text(&run)));
    Ok(ExitCode::SUCCESS)
}

pub async fn runs(
    server: &str,
    plugin: Option<String>,
    status: Option<String>,
    limit: u32,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut q = vec![("limit", limit.to_string())];
    q.extend(plugin.map(|p| ("plugin", p)));
    q.extend(status.map(|s| ("status", s)));
    let body = get_json(server, "/v1/runs", &q).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body["runs"])?);
        return Ok(ExitCode::SUCCESS);
    }
    let runs: Vec<RunRecord> =
        serde_json::from_value(body["runs"].clone()).context("unexpected run records")?;
    print!("{}", output::terminal_safe(&output::runs_table(&runs)));
    Ok(ExitCode::SUCCESS)
}
