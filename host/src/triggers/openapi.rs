//! The OpenAPI 3.0 document of the HTTP API, served at
//! `GET /v1/openapi.json`. Schemas are generated from the types the
//! handlers read and write (`schemars`), so they cannot drift from the
//! code; the paths below mirror `http::router` one to one (a test checks).

use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use super::alerts::{Receipt, Webhook};
use super::http::{LimitQuery, PauseBody, RunBody, WaitQuery};
use crate::killswitch::Pause;
use crate::record::RunRecord;
use crate::service::registry::EntryView;
use crate::service::ClusterView;
use crate::store::{AuditEvent, AuditFilter, RunFilter, StoredAlert};

/// Every error answer.
#[derive(JsonSchema)]
#[allow(dead_code)] // only its schema is used
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(JsonSchema)]
#[allow(dead_code)]
struct ErrorDetail {
    /// Machine-readable, e.g. `bad_request`, `not_pending`.
    code: String,
    message: String,
}

/// The document, built once: with bearer security when the server has
/// tokens (`secured`), without when it is open (loopback only).
pub fn document(secured: bool) -> &'static Value {
    static SECURED: OnceLock<Value> = OnceLock::new();
    static OPEN: OnceLock<Value> = OnceLock::new();
    if secured {
        SECURED.get_or_init(|| build(true))
    } else {
        OPEN.get_or_init(|| build(false))
    }
}

struct Gen(schemars::SchemaGenerator);

impl Gen {
    fn schema<T: JsonSchema>(&mut self) -> Value {
        self.0.subschema_for::<T>().to_value()
    }

    /// Query parameters from the fields of `T`.
    fn query<T: JsonSchema>(&mut self) -> Vec<Value> {
        let schema = self.0.root_schema_for::<T>().to_value();
        let props = schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        props
            .into_iter()
            .map(|(name, mut s)| {
                // OpenAPI 3.0 parameters take no `null` type.
                if let Some(t) = s["type"].as_array() {
                    let t: Vec<Value> = t.iter().filter(|x| *x != "null").cloned().collect();
                    s["type"] = t.first().cloned().unwrap_or(Value::Null);
                }
                s.as_object_mut().map(|o| o.remove("nullable"));
                json!({"name": name, "in": "query", "required": false, "schema": s})
            })
            .collect()
    }
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn errors(codes: &[u16], err: &Value) -> Map<String, Value> {
    codes
        .iter()
        .map(|c| {
            let what = match c {
                400 => "malformed request (the message names the field)",
                401 => "no or unknown bearer token",
                403 => "the token lacks the role, or a foreign Host/Origin without tokens",
                404 => "no such run or plugin",
                408 => "the body did not arrive in time",
                409 => "conflict (not pending, paused, plugin changed or gone)",
                410 => "the plan expired",
                406 => "the request's Accept header takes neither JSON nor an event stream (MCP)",
                413 => "the body is too large",
                415 => "the body is not JSON (`Content-Type: application/json`)",
                429 => "too many requests: failed token checks from this address (try again after `Retry-After` seconds), or the caller holds its share of a limit already (the message names it)",
                503 => "the store cannot be written",
                _ => "error",
            };
            (c.to_string(), ok(what, err.clone()))
        })
        .collect()
}

fn op(
    secured: bool,
    summary: &str,
    role: &str,
    mut responses: Map<String, Value>,
    extra: Value,
) -> Value {
    let mut o = json!({
        "summary": summary,
        "description": format!("Role: {role}."),
        "responses": {},
    });
    if secured && role != "open" {
        o["security"] = json!([{"bearer": []}]);
    }
    o["responses"] = Value::Object(std::mem::take(&mut responses));
    if let (Some(o), Some(extra)) = (o.as_object_mut(), extra.as_object()) {
        o.extend(extra.clone());
    }
    o
}

fn id_param(name: &str, what: &str) -> Vec<Value> {
    vec![
        json!({"name": name, "in": "path", "required": true, "description": what, "schema": {"type": "string"}}),
    ]
}

fn body(schema: Value) -> Value {
    json!({"required": false, "content": {"application/json": {"schema": schema}}})
}

fn build(secured: bool) -> Value {
    let op = |summary: &str, role: &str, responses: Map<String, Value>, extra: Value| {
        op(secured, summary, role, responses, extra)
    };
    let mut g = Gen(SchemaSettings::openapi3().into_generator());
    let err = g.schema::<ErrorBody>();
    let run = g.schema::<RunRecord>();
    let with = |mut m: Map<String, Value>, code: &str, v: Value| {
        m.insert(code.into(), v);
        m
    };
    let std_errors = |extra: &[u16]| {
        let mut c = vec![400, 401, 403, 408, 413, 429, 503];
        c.extend_from_slice(extra);
        errors(&c, &err)
    };

    let plugins_list = json!({"type": "object", "required": ["plugins"], "properties": {"plugins": {"type": "array", "items": g.schema::<EntryView>()}}});
    let runs_list = json!({"type": "object", "required": ["runs"], "properties": {"runs": {"type": "array", "items": run.clone()}}});
    let alerts_list = json!({"type": "object", "required": ["alerts"], "properties": {"alerts": {"type": "array", "items": g.schema::<StoredAlert>()}}});
    let audit_list = json!({"type": "object", "required": ["events"], "properties": {"events": {"type": "array", "items": g.schema::<AuditEvent>()}}});
    let pause_state = json!({"type": "object", "required": ["paused"], "properties": {
        "paused": {"allOf": [g.schema::<Pause>()], "nullable": true},
        "stored": {"type": "boolean"},
        "warning": {"type": "string"},
    }});
    let started = json!({"type": "object", "required": ["run_id", "status"], "properties": {"run_id": {"type": "string"}, "status": {"type": "string"}}});
    let decided = json!({"type": "object", "required": ["run"], "properties": {"run": run.clone(), "live_run": {"type": "string", "nullable": true}}});
    let run_body = g.schema::<RunBody>();
    let pause_body = g.schema::<PauseBody>();
    let webhook = g.schema::<Webhook>();
    let receipt = g.schema::<Receipt>();
    let run_params = [id_param("name", "plugin name"), g.query::<WaitQuery>()].concat();
    let runs_q = g.query::<RunFilter>();
    let audit_q = g.query::<AuditFilter>();
    let limit_q = g.query::<LimitQuery>();

    let paths = json!({
        "/healthz": {"get": op("Liveness: 503 when the store cannot write", "open",
            with(errors(&[503], &err), "200", ok("alive", json!({"type": "object", "properties": {"status": {"type": "string"}}}))), json!({}))},
        "/metrics": {"get": op("Prometheus text exposition", "open",
            with(Map::new(), "200", json!({"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}})), json!({}))},
        "/v1/openapi.json": {"get": op("This document", "open",
            with(Map::new(), "200", ok("the OpenAPI document", json!({"type": "object"}))), json!({}))},
        "/v1/plugins": {"get": op("Plugins with version, digest, grants, mode, load status", "read",
            with(std_errors(&[]), "200", ok("plugins", plugins_list.clone())), json!({}))},
        "/v1/plugins/reload": {"post": op("Rescan the plugins directory", "admin",
            with(std_errors(&[]), "200", ok("plugins", plugins_list)), json!({}))},
        "/v1/plugins/{name}/runs": {"post": op("Start a manual run", "run (approve to run less safely than configured)",
            with(with(std_errors(&[404]), "202", ok("started (or queued)", started)), "200", ok("the finished record (?wait=true), or a skipped one", run.clone())),
            json!({"parameters": run_params, "requestBody": body(run_body)}))},
        "/v1/runs": {"get": op("Run history, newest first", "read",
            with(std_errors(&[]), "200", ok("runs", runs_list)), json!({"parameters": runs_q}))},
        "/v1/runs/{id}": {"get": op("One run record", "read",
            with(std_errors(&[404]), "200", ok("the record", run.clone())), json!({"parameters": id_param("id", "run id")}))},
        "/v1/runs/{id}/approve": {"post": op("Approve a pending plan: it runs live, limited to its actions, once as many distinct people as it requires approved it (403 `own_request`: whoever asked for a run that needs two approvals is not the second; 409 `already_approved`)", "approve",
            with(with(std_errors(&[404, 409, 410]), "202", ok("approved; `live_run` carries it out", decided.clone())), "200", ok("counted; the plan waits for more approvals (`run.approval.approvals`)", decided.clone())), json!({"parameters": id_param("id", "run id")}))},
        "/v1/alerts/{fingerprint}/clear-flap": {"post": op("Clear an alert's flapping: its earlier live mitigations no longer count towards the plugin's `flap.max`, so Remedy acts on it again", "approve",
            with(std_errors(&[400]), "200", ok("cleared", json!({"type": "object", "required": ["fingerprint", "cleared", "by"], "properties": {"fingerprint": {"type": "string"}, "cleared": {"type": "boolean"}, "by": {"type": "string"}}}))),
            json!({"parameters": [{"name": "fingerprint", "in": "path", "required": true, "description": "the alert's fingerprint, as Alertmanager gives it", "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}}]}))},
        "/v1/runs/{id}/reject": {"post": op("Reject a pending plan", "approve",
            with(std_errors(&[404, 409, 410]), "200", ok("rejected", decided)), json!({"parameters": id_param("id", "run id")}))},
        "/v1/runs/{id}/report": {"get": op("The post-incident review", "read",
            with(std_errors(&[404]), "200", json!({"description": "Markdown", "content": {"text/markdown": {"schema": {"type": "string"}}}})), json!({"parameters": id_param("id", "run id")}))},
        "/v1/admin/pause": {
            "get": op("The kill switch", "read", with(std_errors(&[]), "200", ok("state", pause_state.clone())), json!({})),
            "post": op("Turn the kill switch on", "admin", with(std_errors(&[]), "200", ok("state", pause_state.clone())), json!({"requestBody": body(pause_body)})),
        },
        "/v1/cluster": {"get": op("Replicas on this store, their heartbeats, and which runs the schedules", "read",
            with(std_errors(&[]), "200", ok("the cluster", g.schema::<ClusterView>())), json!({}))},
        "/v1/admin/resume": {"post": op("Turn the kill switch off", "admin",
            with(std_errors(&[]), "200", ok("state", pause_state)), json!({}))},
        "/v1/alerts": {
            "post": op("Alertmanager webhook (version 4)", "alerts",
                with(std_errors(&[]), "202", ok("stored, with the runs it started", receipt)),
                json!({"requestBody": {"required": true, "content": {"application/json": {"schema": webhook}}}})),
            "get": op("Received alerts, newest first", "read",
                with(std_errors(&[]), "200", ok("alerts", alerts_list)), json!({"parameters": limit_q})),
        },
        "/mcp": {"post": op("MCP (Model Context Protocol, Streamable HTTP) for AI agents: JSON-RPC 2.0 messages (`initialize`, `tools/list`, `tools/call`, `ping`); the tools list_runbooks, list_alerts, list_runs, get_run, get_report, detect (a dry run), propose (a plan for a human to approve) and get_plan_status. Send `Accept: application/json, text/event-stream`; answers are JSON. Clients of the 2025 protocol versions get an `Mcp-Session-Id` from `initialize` and must send it with every later request (400 without it); 2026-07-28 clients send `MCP-Protocol-Version` and need no session. No tool approves, resumes, reconfigures or acts live", "agent",
            with(std_errors(&[406, 415, 429]), "200", json!({"description": "a JSON-RPC response", "content": {"application/json": {"schema": {"type": "object"}}}})),
            json!({
                "parameters": [{"name": "Accept", "in": "header", "required": true, "schema": {"type": "string", "enum": ["application/json, text/event-stream"]}}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object",
                    "description": "a JSON-RPC 2.0 request (with an `id`) or notification",
                    "required": ["jsonrpc", "method"],
                    "properties": {
                        "jsonrpc": {"type": "string", "enum": ["2.0"]},
                        "id": {"type": "integer"},
                        "method": {"type": "string", "enum": ["initialize", "ping", "tools/list", "tools/call", "resources/templates/list", "resources/read", "notifications/initialized"]},
                        "params": {"type": "object"},
                    },
                }}}},
            }))},
        "/v1/audit": {"get": op("Audit events, oldest first", "read",
            with(std_errors(&[]), "200", ok("events", audit_list)), json!({"parameters": audit_q}))},
        "/v1/slack/interactions": {"post": op("Slack's interactivity and slash-command requests (Approve / Reject buttons, `/remedy pause|resume|status`). No bearer token: each request must carry Slack's signature (`X-Slack-Signature`, `X-Slack-Request-Timestamp`), made with the app's signing secret at most 5 minutes ago and not seen before; the Slack user's role comes from `[chat.slack]`. Answered at once; a decision's outcome is posted back to the user in Slack", "open (Slack-signed)",
            with(errors(&[400, 401, 404, 408, 413, 429], &err), "200", json!({"description": "taken (buttons: an empty body; slash commands: the reply Slack shows)", "content": {"application/json": {"schema": {"type": "object", "properties": {"response_type": {"type": "string", "enum": ["ephemeral", "in_channel"]}, "text": {"type": "string"}}}}}})),
            json!({"requestBody": {"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
                "payload": {"type": "string", "description": "an interaction, as JSON"},
                "command": {"type": "string"}, "text": {"type": "string"}, "user_id": {"type": "string"}, "channel_id": {"type": "string"},
            }}}}}, "parameters": [
                {"name": "X-Slack-Signature", "in": "header", "required": true, "schema": {"type": "string"}},
                {"name": "X-Slack-Request-Timestamp", "in": "header", "required": true, "schema": {"type": "string"}},
            ]}))},
        "/v1/events": {"get": op("Live feed (server-sent events): `ready` first, then run.started, run.finished, action, approval.pending, approval.decided, alert.received, pause.changed; `lagged` when the client fell behind; 503 when 64 feeds are open, 429 when this token (or peer address, without tokens) holds 16", "read",
            with(std_errors(&[429]), "200", json!({"description": "an event stream; each `data` is an Event", "content": {"text/event-stream": {"schema": g.schema::<crate::service::Event>()}}})), json!({}))},
    });
    let schemas = Value::Object(g.0.take_definitions(true).into_iter().collect());
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Remedy",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Runs production runbooks as sandboxed WebAssembly plugins. Every error is {\"error\": {\"code\", \"message\"}}.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": if secured { json!({"bearer": {"type": "http", "scheme": "bearer"}}) } else { json!({}) },
        },
    })
}
