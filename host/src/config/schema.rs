//! `remedy.toml` as a JSON Schema (`remedy config schema`), derived from the
//! typed config itself, and the configuration reference generated from
//! that schema: neither can drift from what the loader accepts.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;

use crate::action::ActionKind;
use crate::escalation::Priority;

/// The JSON Schema of `remedy.toml` (draft 2020-12), with every key's
/// description, type, default (in its description) and examples.
pub fn schema() -> Value {
    let mut schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<super::Config>();
    schema.insert("title".into(), "remedy.toml".into());
    schema.to_value()
}

impl JsonSchema for Priority {
    fn schema_name() -> Cow<'static, str> {
        "Priority".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<String> = Priority::ALL
            .iter()
            .flat_map(|p| [p.as_str().to_ascii_lowercase(), p.as_str().to_string()])
            .collect();
        json_schema!({
            "description": "One of the seed's four priorities, P0 (the most urgent) to P3; `p0` and `P0` are the same.",
            "type": "string",
            "enum": names,
        })
    }
}

impl JsonSchema for ActionKind {
    fn schema_name() -> Cow<'static, str> {
        "ActionKind".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = ActionKind::ALL.iter().map(|k| k.as_str()).collect();
        json_schema!({
            "description": "A kind of mutating host call, `interface.function`.",
            "type": "string",
            "enum": names,
        })
    }
}

/// What a plugin's own config value may be: it reaches the plugin as a
/// string (an array as a comma-separated list).
pub struct ConfigValueSchema;

impl JsonSchema for ConfigValueSchema {
    fn schema_name() -> Cow<'static, str> {
        "ConfigValue".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A string, number or boolean, or an array of those; the plugin receives it as a string (an array comma-separated).",
            "type": ["string", "number", "integer", "boolean", "array"],
            "items": { "type": ["string", "number", "integer", "boolean"] },
            "examples": ["0.05", 200, true, ["db-primary", "db-replica"]],
        })
    }
}

/// The configuration reference (Markdown), generated from [`schema`]: every
/// section, key, type, default and example. `docs/reference/config.md` is
/// this text, and a test fails when the two differ.
pub fn reference() -> String {
    let root = schema();
    let defs = root["$defs"].as_object().cloned().unwrap_or_default();
    let mut out = String::from(
        "# Configuration reference\n\n\
         Every key `remedy.toml` takes, generated from the typed configuration \
         the loader uses (`remedy config reference` prints this page; a test \
         fails when the two differ). Unknown keys are errors, and so are values \
         of the wrong type or shape: the error names the file, the key and the line.\n\n\
         Editors that read JSON Schema validate a file as you type: `remedy config \
         schema > remedy.schema.json` (the same schema is \
         [`remedy.schema.json`](remedy.schema.json) beside this page), then, with \
         Taplo / Even Better TOML, put `#:schema ./remedy.schema.json` on the \
         first line of `remedy.toml`.\n\n\
         Keys without a default are unset until you set them; an unset backend \
         answers plugins `unavailable`.\n",
    );
    let mut used = std::collections::BTreeSet::new();
    let mut sections = Vec::new();
    collect(&root, "", &defs, &mut sections);
    for section in &sections {
        out.push_str(&format!("\n## `{}`\n\n", section.header));
        if !section.about.is_empty() {
            out.push_str(&format!("{}\n\n", section.about));
        }
        out.push_str("| Key | Type | Default | Description |\n|---|---|---|---|\n");
        for key in &section.keys {
            let ty = type_name(&key.schema, &mut used);
            let about = describe(&key.schema);
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                key.name,
                ty,
                default_of(&key.schema, &about),
                cell(&about)
            ));
        }
    }
    out.push_str("\n## Types\n\nThe shapes values take, checked when the file is read.\n");
    for name in used {
        let def = &defs[&name];
        out.push_str(&format!("\n### {name}\n\n{}\n", describe(def)));
        if let Some(values) = def["enum"].as_array() {
            let values: Vec<String> = values.iter().map(|v| format!("`{}`", plain(v))).collect();
            out.push_str(&format!("\nOne of {}.\n", values.join(", ")));
        }
        if let Some(variants) = def["oneOf"].as_array() {
            out.push('\n');
            for v in variants {
                let value = v["const"].as_str().or(v["enum"][0].as_str()).unwrap_or("");
                out.push_str(&format!("- `{value}`: {}\n", cell(&describe(v))));
            }
        }
        if let (Some(min), Some(max)) = (def["minimum"].as_u64(), def["maximum"].as_u64()) {
            out.push_str(&format!("\nFrom {min} to {max}.\n"));
        }
        if let Some(pattern) = def["pattern"].as_str() {
            out.push_str(&format!("\nMatches `{pattern}`.\n"));
        }
        if let Some(examples) = def["examples"].as_array() {
            let examples: Vec<String> = examples.iter().map(toml_value).collect();
            out.push_str(&format!("\nExamples: {}.\n", examples.join(", ")));
        }
    }
    out
}

struct Section {
    header: String,
    about: String,
    keys: Vec<Key>,
}

struct Key {
    name: String,
    schema: Value,
}

/// The object behind `$ref`, `anyOf: [X, null]` (an `Option`) and
/// `allOf: [X]`.
fn resolve<'a>(s: &'a Value, defs: &'a serde_json::Map<String, Value>) -> &'a Value {
    if let Some(r) = s["$ref"].as_str() {
        return resolve(&defs[r.trim_start_matches("#/$defs/")], defs);
    }
    for list in ["anyOf", "allOf"] {
        if let Some(items) = s[list].as_array() {
            let real: Vec<&Value> = items.iter().filter(|i| i["type"] != "null").collect();
            if real.len() == 1 {
                return resolve(real[0], defs);
            }
        }
    }
    s
}

fn is_table(s: &Value) -> bool {
    s["properties"].is_object()
}

/// A section per table (`[server]`), map of tables (`[plugins.NAME]`) and
/// array of tables (`[[server.tokens]]`), in the order of the types.
fn collect(s: &Value, path: &str, defs: &serde_json::Map<String, Value>, out: &mut Vec<Section>) {
    let s = resolve(s, defs);
    let Some(props) = s["properties"].as_object() else {
        return;
    };
    let mut keys = Vec::new();
    let mut nested = Vec::new();
    for (name, prop) in props {
        let target = resolve(prop, defs);
        let child = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        if let Some((names, value)) = keyed(target) {
            // A table keyed by an enumeration (a priority): one entry for
            // all its keys, which the description lists.
            let about = format!("{} Keys: {}.", describe(prop), names.join(", "));
            if is_table(resolve(value, defs)) {
                nested.push((format!("{child}.KEY"), value.clone(), Some(about)));
            } else {
                let schema = serde_json::json!({
                    "type": "object",
                    "additionalProperties": value,
                    "description": about.trim(),
                });
                keys.push(Key {
                    name: name.clone(),
                    schema,
                });
            }
        } else if is_table(target) {
            nested.push((child, prop.clone(), None));
        } else if target["additionalProperties"].is_object()
            && is_table(resolve(&target["additionalProperties"], defs))
        {
            nested.push((
                format!("{child}.NAME"),
                target["additionalProperties"].clone(),
                None,
            ));
        } else if target["type"] == "array" && is_table(resolve(&target["items"], defs)) {
            nested.push((format!("[{child}]"), target["items"].clone(), None));
        } else {
            keys.push(Key {
                name: name.clone(),
                schema: prop.clone(),
            });
        }
    }
    if !keys.is_empty() {
        out.push(Section {
            header: if path.is_empty() {
                "top level".into()
            } else {
                format!("[{path}]")
            },
            about: cell(&describe(s)),
            keys,
        });
    }
    for (child, schema, about) in nested {
        let before = out.len();
        // `[[a.b]]`: an array of tables; its keys' paths are `a.b`.
        let path = child.trim_start_matches('[').trim_end_matches(']');
        collect(&schema, path, defs, out);
        if let Some(section) = out.get_mut(before) {
            if child.starts_with('[') {
                section.header = format!("[{child}]");
            }
            if let Some(about) = about {
                section.about = cell(&about);
            }
        }
    }
}

/// The keys and shared value of an object whose properties all have the
/// same schema (a map keyed by an enumeration, as schemars writes one).
fn keyed(s: &Value) -> Option<(Vec<String>, &Value)> {
    let props = s["properties"].as_object()?;
    let mut values = props.values();
    let first = values.next()?;
    (props.len() > 1 && values.all(|v| v == first))
        .then(|| (props.keys().cloned().collect(), first))
}

/// Title and description, as one text.
fn describe(s: &Value) -> String {
    ["title", "description"]
        .iter()
        .filter_map(|f| s[*f].as_str())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A Markdown table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON example as TOML writes it.
fn toml_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{s:?}`").replace("\\\"", "\""),
        Value::Array(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|i| match i {
                    Value::String(s) => format!("{s:?}"),
                    other => other.to_string(),
                })
                .collect();
            format!("`[{}]`", items.join(", "))
        }
        other => format!("`{other}`"),
    }
}

/// `string`, `integer`, a link to a named type, `list of …`, `table of …`.
fn type_name(s: &Value, used: &mut std::collections::BTreeSet<String>) -> String {
    if let Some(r) = s["$ref"].as_str() {
        let name = r.trim_start_matches("#/$defs/").to_string();
        let link = format!("[{name}](#{})", name.to_lowercase());
        used.insert(name);
        return link;
    }
    for list in ["anyOf", "allOf", "oneOf"] {
        if let Some(items) = s[list].as_array() {
            let names: Vec<String> = items
                .iter()
                .filter(|i| i["type"] != "null")
                .map(|i| type_name(i, used))
                .collect();
            return names.join(" or ");
        }
    }
    let types: Vec<&str> = match &s["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => vec![],
    };
    match types.as_slice() {
        ["array"] => format!("list of {}", type_name(&s["items"], used)),
        ["object"] if s["additionalProperties"].is_object() => {
            format!("table of {}", type_name(&s["additionalProperties"], used))
        }
        ["string"] if s["format"] == "ip" || s["format"].is_null() => "string".into(),
        ["integer"] => "integer".into(),
        [one] => (*one).to_string(),
        _ => "value".into(),
    }
}

/// The default a key's description states (`default `X``, `(default
/// 2000)`), else what an absent key means for its type.
fn default_of(s: &Value, about: &str) -> String {
    // "`x` (the default)", "(`true`, the default)": the value before it.
    if let Some(i) = about.find("the default") {
        let before = &about[..i];
        if let Some(end) = before.rfind('`') {
            if before.len() - end <= 6 {
                if let Some(start) = before[..end].rfind('`') {
                    return format!("`{}`", &before[start + 1..end]);
                }
            }
        }
    }
    let lower = about.to_lowercase();
    if let Some(i) = lower.find("default") {
        let rest = &about[i + "default".len()..];
        let rest = rest.trim_start_matches(|c: char| c == ':' || c.is_whitespace());
        let rest = rest.strip_prefix("is ").unwrap_or(rest);
        if let Some(code) = rest.strip_prefix('`') {
            if let Some(end) = code.find('`') {
                return format!("`{}`", &code[..end]);
            }
        }
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .collect();
        if !word.is_empty()
            && (word.starts_with(|c: char| c.is_ascii_digit()) || word == "true" || word == "false")
        {
            return format!("`{}`", word.trim_end_matches('.'));
        }
    }
    if let Some(d) = s.get("default") {
        return format!("`{}`", plain(d));
    }
    "—".into()
}
