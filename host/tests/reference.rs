//! The book's reference pages are generated from what they describe — the
//! typed config, the CLI's clap definitions (its `--help`), the OpenAPI
//! document and the WIT files — and these tests fail when a page differs
//! from what the code generates now. `REMEDY_BLESS=1 cargo nextest run -p
//! remedy --test reference` rewrites them.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reference")
}

/// Compares `docs/reference/NAME` with `generated`, or writes it when
/// blessing.
fn check(name: &str, generated: &str) {
    let path = docs().join(name);
    if std::env::var_os("REMEDY_BLESS").is_some() {
        std::fs::create_dir_all(docs()).unwrap();
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(generated.lines().count()));
        panic!(
            "docs/reference/{name} is out of date (first difference at line {}): run \
             `REMEDY_BLESS=1 cargo nextest run -p remedy --test reference` and commit it",
            line + 1
        );
    }
}

#[test]
fn the_config_reference_and_schema_are_generated_from_the_typed_config() {
    check("config.md", &remedy::config::schema::reference());
    let schema = serde_json::to_string_pretty(&remedy::config::schema::schema()).unwrap() + "\n";
    check("remedy.schema.json", &schema);
}

/// Every key of the config has a description: a key added without a doc
/// comment fails here, before it reaches the reference undocumented.
#[test]
fn every_config_key_is_described() {
    let schema = remedy::config::schema::schema();
    let defs = schema["$defs"].as_object().unwrap();
    let mut missing = Vec::new();
    let mut walk = |name: &str, props: &Value| {
        for (key, prop) in props.as_object().into_iter().flatten() {
            let described = ["title", "description"]
                .iter()
                .any(|f| prop[*f].as_str().is_some_and(|t| !t.is_empty()));
            if !described {
                missing.push(format!("{name}.{key}"));
            }
        }
    };
    walk("(top level)", &schema["properties"]);
    for (name, def) in defs {
        walk(name, &def["properties"]);
    }
    assert!(
        missing.is_empty(),
        "config keys without a doc comment (the reference would not say what they do): {missing:?}"
    );
}

fn remedy_help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args(args)
        .arg("--help")
        .env_clear()
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    assert!(out.status.success(), "remedy {args:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a `--help` lists under `Commands:`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

#[test]
fn the_cli_reference_is_the_clis_own_help() {
    let mut out = String::from(
        "# CLI reference\n\n\
         Every `remedy` command with its options, as `remedy COMMAND --help` prints \
         them (this page is generated from the binary; a test fails when it differs). \
         Commands that talk to a running server take `--server` (or `REMEDY_URL`) \
         and a token from `REMEDY_TOKEN`.\n",
    );
    let top = remedy_help(&[]);
    out.push_str(&format!("\n## remedy\n\n```text\n{}```\n", top));
    for cmd in subcommands(&top) {
        let help = remedy_help(&[&cmd]);
        out.push_str(&format!("\n## remedy {cmd}\n\n```text\n{help}```\n"));
        for sub in subcommands(&help) {
            let help = remedy_help(&[&cmd, &sub]);
            out.push_str(&format!("\n### remedy {cmd} {sub}\n\n```text\n{help}```\n"));
        }
    }
    check("cli.md", &out);
}

/// One cell of a Markdown table.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// `RunRecord`, `array of Receipt`, `string`…
fn schema_name(s: &Value) -> String {
    if let Some(r) = s["$ref"].as_str() {
        return format!("`{}`", r.rsplit('/').next().unwrap());
    }
    match s["type"].as_str() {
        Some("array") => format!("array of {}", schema_name(&s["items"])),
        Some(t) => t.to_string(),
        None => "object".into(),
    }
}

#[test]
fn the_http_reference_is_the_openapi_document() {
    let doc = remedy::triggers::openapi::document(true);
    let mut out = String::from(
        "# HTTP API reference\n\n\
         Generated from the OpenAPI 3.0 document the server publishes at \
         `GET /v1/openapi.json` (a test fails when this page differs from it): load \
         that document in any OpenAPI tool for the full schemas. Send \
         `Authorization: Bearer TOKEN`; each endpoint names the role its token needs \
         (see [Security](../security.md)). Errors are JSON: \
         `{\"error\": {\"code\": \"…\", \"message\": \"…\"}}`.\n",
    );
    let mut paths: Vec<(&String, &Value)> = doc["paths"].as_object().unwrap().iter().collect();
    paths.sort_by_key(|(p, _)| p.as_str());
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            out.push_str(&format!(
                "\n## {} `{path}`\n\n{}\n\n{}\n",
                method.to_uppercase(),
                op["summary"].as_str().unwrap_or(""),
                op["description"].as_str().unwrap_or("")
            ));
            if let Some(params) = op["parameters"].as_array() {
                out.push_str("\n| Parameter | In | Type | Description |\n|---|---|---|---|\n");
                for p in params {
                    out.push_str(&format!(
                        "| `{}` | {} | {} | {} |\n",
                        p["name"].as_str().unwrap_or(""),
                        p["in"].as_str().unwrap_or(""),
                        schema_name(&p["schema"]),
                        cell(p["description"].as_str().unwrap_or(""))
                    ));
                }
            }
            if let Some(content) = op["requestBody"]["content"].as_object() {
                for (mime, c) in content {
                    out.push_str(&format!(
                        "\nBody: `{mime}`, {}.\n",
                        schema_name(&c["schema"])
                    ));
                }
            }
            out.push_str("\n| Status | Meaning | Body |\n|---|---|---|\n");
            for (status, r) in op["responses"].as_object().unwrap() {
                let body = r["content"]
                    .as_object()
                    .and_then(|c| c.values().next())
                    .map(|c| schema_name(&c["schema"]))
                    .unwrap_or_else(|| "—".into());
                out.push_str(&format!(
                    "| {status} | {} | {body} |\n",
                    cell(r["description"].as_str().unwrap_or(""))
                ));
            }
        }
    }
    check("http-api.md", &out);
}

#[test]
fn the_wit_reference_is_the_wit_files() {
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    let mut out = String::from(
        "# WIT reference\n\n\
         The contract between Remedy and a runbook: the `remedy:plugin@0.1.0` \
         package, as this build implements it (this page is the `wit/` directory; a \
         test fails when they differ). `remedy wit DIR` writes the same files for a \
         plugin's build; each interface is granted separately (see \
         [Security](../security.md)).\n",
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&wit)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wit"))
        .collect();
    // The world first, the shared types next, then the interfaces.
    files.sort_by_key(|p| {
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        (name != "world", name != "types", name)
    });
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        out.push_str(&format!(
            "\n## {}\n\n```wit\n{}```\n",
            f.file_name().unwrap().to_string_lossy(),
            text
        ));
    }
    check("wit.md", &out);
}
