//! What starts runs: the HTTP API (operators), the Alertmanager receiver and
//! schedules. All of them go through `Service::start_run`.

pub mod alerts;
pub mod console;
pub mod http;
pub mod mcp;
pub mod openapi;
pub mod schedule;

/// Deserializes a JSON body; the error names the field at fault
/// (`alerts[0].startsAt: missing field`), or says the body is not JSON.
pub fn parse_json<T: for<'de> serde::Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.starts_with('?') {
            format!("invalid JSON body: {inner}")
        } else {
            format!("`{path}`: {inner}")
        }
    })
}
