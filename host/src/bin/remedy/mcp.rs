//! `remedy mcp`: the MCP server over stdio, for an agent running beside
//! the operator (Claude Desktop, an IDE): each JSON-RPC message from
//! standard input goes to a running `remedy serve`'s `/mcp` with the
//! token in `REMEDY_TOKEN`, and each answer comes back on standard
//! output, one line each. It never runs anything in-process: the tools,
//! the gate, the audit and the limits are the server's, the same for
//! every agent however it connects.

use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The most a line from the agent may hold.
const MAX_LINE: usize = 1 << 20;

pub async fn bridge(server: &str) -> anyhow::Result<ExitCode> {
    let url = format!("{}/mcp", server.trim_end_matches('/'));
    let token = std::env::var("REMEDY_TOKEN").ok().filter(|t| !t.is_empty());
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .context("building the HTTP client")?;
    let mut session: Option<String> = None;
    let mut version: Option<String> = None;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Some(line) = lines.next_line().await.context("reading standard input")? {
        if line.trim().is_empty() {
            continue;
        }
        let id = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v.get("id").cloned());
        let answers = if line.len() > MAX_LINE {
            Err(format!(
                "message of {} bytes: at most {MAX_LINE}",
                line.len()
            ))
        } else {
            let mut req = http
                .post(&url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(line);
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            if let Some(s) = &session {
                req = req.header("mcp-session-id", s);
            }
            if let Some(v) = &version {
                req = req.header("mcp-protocol-version", v);
            }
            forward(req, &mut session).await
        };
        let answers = match answers {
            Ok(a) => a,
            // A request gets its error as a JSON-RPC answer; a
            // notification has no one to tell but the log.
            Err(e) => match id {
                Some(id) => vec![
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000, "message": e}}),
                ],
                None => {
                    eprintln!("remedy mcp: {e}");
                    vec![]
                }
            },
        };
        for a in answers {
            if let Some(v) = a.pointer("/result/protocolVersion").and_then(Value::as_str) {
                version = Some(v.to_string());
            }
            let mut text = a.to_string();
            text.push('\n');
            out.write_all(text.as_bytes()).await?;
            out.flush().await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends one message; its answers (none for a notification, one for a
/// request, possibly more from an event stream).
async fn forward(
    req: reqwest::RequestBuilder,
    session: &mut Option<String>,
) -> Result<Vec<Value>, String> {
    let r = req
        .send()
        .await
        .map_err(|e| format!("cannot reach the server: {e}"))?;
    if let Some(s) = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
    {
        *session = Some(s.to_string());
    }
    let status = r.status();
    let kind = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = r
        .text()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    if !status.is_success() {
        let msg = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or(body);
        return Err(format!("{status}: {msg}"));
    }
    if body.trim().is_empty() {
        return Ok(vec![]);
    }
    if kind.starts_with("text/event-stream") {
        return Ok(body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str(d.trim()).ok())
            .collect());
    }
    serde_json::from_str(&body)
        .map(|v| vec![v])
        .map_err(|e| format!("the server's answer is not JSON: {e}"))
}
