//! `remedy runs --follow`: the server's live feed (`GET /v1/events`), one
//! line per event, until the server closes it or the user interrupts.

use std::process::ExitCode;

use anyhow::{bail, Context as _};

use crate::output::terminal_safe;

/// Server-sent events as they arrive: bytes in, complete events out.
#[derive(Default)]
pub struct SseParser {
    /// Bytes, not text: a character may be split across two chunks.
    buf: Vec<u8>,
}

/// One complete server-sent event.
#[derive(Debug, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

impl SseParser {
    /// Takes the next chunk; answers the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend(chunk.iter().filter(|b| **b != b'\r'));
        let mut out = Vec::new();
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let bytes: Vec<u8> = self.buf.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&bytes);
            let (mut event, mut data) = (String::from("message"), Vec::new());
            for line in block.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event = value.to_string(),
                    "data" => data.push(value),
                    _ => {} // comments (keep-alives), ids, retry
                }
            }
            if !data.is_empty() {
                out.push(SseEvent {
                    event,
                    data: data.join("\n"),
                });
            }
        }
        out
    }
}

/// One event as a terminal line.
pub fn line(ev: &SseEvent) -> String {
    let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap_or_default();
    let d = &v["detail"];
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let what = match ev.event.as_str() {
        "ready" => {
            return match v["paused"].as_object() {
                Some(p) => format!(
                    "following live events (automation PAUSED by {})",
                    s(&p["by"])
                ),
                None => "following live events".into(),
            }
        }
        "lagged" => return format!("… {} events missed (this client fell behind)", v["missed"]),
        "run.started" => format!(
            "{}{}",
            if d["dry_run"] == true {
                "dry run"
            } else {
                "live"
            },
            d["note"]
                .as_str()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ),
        "run.finished" => format!(
            "{}{}{}",
            s(&d["status"]),
            d["duration_ms"]
                .as_u64()
                .map(|ms| format!(" in {ms} ms"))
                .unwrap_or_default(),
            d["error"]
                .as_str()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
        "action" => format!(
            "{} {} on {}",
            s(&d["applied"]),
            s(&d["kind"]),
            s(&d["target"])
        ),
        "approval.pending" => format!(
            "plan of {} action(s) waits for approval until {}",
            d["plan"].as_array().map_or(0, Vec::len),
            s(&d["expires_at"])
        ),
        "approval.decided" => format!("{} by {}", s(&d["decision"]), s(&d["by"])),
        "alert.received" => format!(
            "{} {} ({} run(s))",
            s(&d["alertname"]),
            s(&d["status"]),
            d["runs"].as_array().map_or(0, Vec::len)
        ),
        "pause.changed" => match d["paused"].as_object() {
            Some(p) => format!("automation PAUSED by {}", s(&p["by"])),
            None => "automation resumed".into(),
        },
        _ => d.to_string(),
    };
    // On a store several replicas share, where it happened.
    let on = v["replica"]
        .as_str()
        .map(|r| format!("  (on {r})"))
        .unwrap_or_default();
    format!(
        "{}  {:<17} {:<22} {:<36}  {what}{on}",
        s(&v["at"]),
        ev.event,
        s(&v["plugin"]),
        s(&v["run_id"]),
    )
}

pub async fn follow(server: &str, plugin: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let mut req = reqwest::Client::new().get(format!("{}/v1/events", server.trim_end_matches('/')));
    if let Ok(token) = std::env::var("REMEDY_TOKEN") {
        req = req.bearer_auth(token);
    }
    let mut resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    if !resp.status().is_success() {
        let code = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(String::from))
            .unwrap_or(text);
        bail!("{server}: HTTP {code}: {msg}");
    }
    let mut parser = SseParser::default();
    while let Some(chunk) = resp.chunk().await.context("reading the event stream")? {
        for ev in parser.push(&chunk) {
            let theirs = serde_json::from_str::<serde_json::Value>(&ev.data)
                .ok()
                .and_then(|v| v["plugin"].as_str().map(String::from));
            if plugin.is_some() && theirs.is_some() && theirs != plugin {
                continue;
            }
            if json {
                println!("{}", ev.data);
            } else {
                println!("{}", terminal_safe(&line(&ev)));
            }
        }
    }
    eprintln!("{server} closed the event stream");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_keep_alives_are_parsed() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\n\nevent: run.fin").is_empty());
        let evs = p.push(b"ished\r\nid: 3\r\ndata: {\"plugin\":\"p\",\r\ndata: \"x\":1}\r\n\r\nevent: ready\ndata: {}\n\n");
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: "run.finished".into(),
                    data: "{\"plugin\":\"p\",\n\"x\":1}".into()
                },
                SseEvent {
                    event: "ready".into(),
                    data: "{}".into()
                }
            ]
        );
    }

    #[test]
    fn a_character_split_across_chunks_is_kept() {
        let mut p = SseParser::default();
        let ev = "event: x\ndata: {\"a\":\"é\"}\n\n".as_bytes();
        let cut = ev.iter().position(|b| *b == 0xC3).unwrap_or(0) + 1;
        assert!(p.push(&ev[..cut]).is_empty());
        assert_eq!(p.push(&ev[cut..])[0].data, "{\"a\":\"é\"}");
    }

    #[test]
    fn a_finished_run_reads_as_one_line() {
        let ev = SseEvent {
            event: "run.finished".into(),
            data: r#"{"at":"T","plugin":"disk","run_id":"r1","detail":{"status":"failed","duration_ms":12,"error":"boom"}}"#.into(),
        };
        let l = line(&ev);
        assert!(
            l.contains("run.finished") && l.contains("disk") && l.contains("failed in 12 ms: boom"),
            "{l}"
        );
        assert!(!l.contains("(on "), "one replica names none: {l}");
    }

    #[test]
    fn another_replica_s_event_names_it() {
        let ev = SseEvent {
            event: "run.started".into(),
            data: r#"{"at":"T","plugin":"disk","run_id":"r1","replica":"r2","detail":{"dry_run":true}}"#.into(),
        };
        assert!(line(&ev).ends_with("dry run  (on r2)"), "{}", line(&ev));
    }
}
