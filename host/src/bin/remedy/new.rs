//! `remedy new` and `remedy wit`: a runbook project outside this
//! repository, in Rust, Python or JavaScript, that builds with one command
//! and needs nothing but what this binary carries (the WIT, the Rust SDK,
//! the Python/JS helper modules, a skeleton, fixtures and a README).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context as _};
use remedy::config::Capability;

/// The WIT contract, as this binary implements it: the shared types, the
/// world, and an interface file per capability.
fn wit_files() -> Vec<(String, &'static str)> {
    let common = remedy::grants::WIT_COMMON
        .iter()
        .map(|(n, t)| (n.to_string(), *t));
    let caps = Capability::ALL
        .iter()
        .map(|c| (format!("{}.wit", c.as_str()), c.wit()));
    common.chain(caps).collect()
}

/// The Rust SDK, vendored into a Rust project as `sdk/`.
const SDK: &[(&str, &str)] = &[
    (
        "src/lib.rs",
        include_str!("../../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "src/config.rs",
        include_str!("../../../../plugins/sdk/src/config.rs"),
    ),
    (
        "src/query.rs",
        include_str!("../../../../plugins/sdk/src/query.rs"),
    ),
    (
        "src/report.rs",
        include_str!("../../../../plugins/sdk/src/report.rs"),
    ),
    ("Cargo.toml", include_str!("templates/rust/sdk.Cargo.toml")),
];

const ERROR_RATIO: &str =
    r#"sum(rate(http_requests_total{status=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))"#;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// The interfaces a runbook imports: `--uses`, with `log` always.
pub fn parse_uses(uses: &str) -> anyhow::Result<BTreeSet<Capability>> {
    let mut out = BTreeSet::from([Capability::Log]);
    for u in uses.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let Some(cap) = Capability::parse(u) else {
            bail!(
                "--uses {uses}: unknown interface `{u}` (one of {})",
                Capability::names()
            );
        };
        out.insert(cap);
    }
    Ok(out)
}

/// `world.wit` importing only `uses` (the whole world when `None`).
fn world(uses: Option<&BTreeSet<Capability>>) -> String {
    let full = remedy::grants::WIT_COMMON
        .iter()
        .find(|(n, _)| *n == "world.wit")
        .map_or("", |(_, t)| *t);
    let Some(uses) = uses else {
        return full.to_string();
    };
    let mut out: Vec<&str> = Vec::new();
    for line in full.lines() {
        let import = line
            .trim()
            .strip_prefix("import ")
            .and_then(|r| r.strip_suffix(';'));
        if let Some(name) = import {
            if !Capability::parse(name).is_some_and(|c| uses.contains(&c)) {
                // Its doc comment goes with it.
                while out.last().is_some_and(|l| l.trim().starts_with("///")) {
                    out.pop();
                }
                continue;
            }
        }
        out.push(line);
    }
    out.join("\n") + "\n"
}

/// `remedy wit DIR`: the WIT files, with the world narrowed to `uses`.
pub fn export_wit(dir: &Path, uses: Option<&BTreeSet<Capability>>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in wit_files() {
        let text = if name == "world.wit" {
            world(uses)
        } else {
            text.to_string()
        };
        write(&dir.join(&name), &text)?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Fills `{{key}}` from `vars` and keeps `{{#cap}}…{{/cap}}` only when the
/// runbook uses `cap` (`{{^cap}}…{{/cap}}` only when it does not).
fn render(template: &str, vars: &[(&str, String)], uses: &BTreeSet<Capability>) -> String {
    let mut s = template.to_string();
    for &cap in Capability::ALL {
        let name = cap.as_str();
        let on = uses.contains(&cap);
        for (open, keep) in [
            (format!("{{{{#{name}}}}}"), on),
            (format!("{{{{^{name}}}}}"), !on),
        ] {
            let close = format!("{{{{/{name}}}}}");
            while let Some(start) = s.find(&open) {
                let Some(len) = s[start..].find(&close) else {
                    break;
                };
                let inner = s[start + open.len()..start + len].to_string();
                let replacement = if keep { inner } else { String::new() };
                s.replace_range(start..start + len + close.len(), &replacement);
            }
        }
    }
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    s
}

/// `remedy new NAME --lang L --uses … DIR`.
pub fn scaffold(
    name: &str,
    lang: Lang,
    uses: &BTreeSet<Capability>,
    dir: &Path,
) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.starts_with('-')
    {
        bail!("`{name}` is not a plugin name: lowercase letters, digits and dashes, e.g. `queue-backlog`");
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} exists and is not empty: give a new directory",
            dir.display()
        );
    }
    let crate_name = name.replace('-', "_");
    let alert: String = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let mut findings = Vec::new();
    if uses.contains(&Capability::Metrics) {
        findings.push("\"error ratio 12.0%\"");
    }
    if uses.contains(&Capability::Database) {
        findings.extend([
            "\"95 of 100 connections in use\"",
            "\"session 4242 (worker)\"",
        ]);
    }
    let vars = [
        ("name", name.to_string()),
        ("crate", crate_name.clone()),
        ("alert", alert),
        ("query", ERROR_RATIO.to_string()),
        ("findings", findings.join(", ")),
        (
            "incident",
            if uses.contains(&Capability::Database) {
                "connections exhausted by a leaking session: it is terminated".to_string()
            } else {
                "error ratio above the threshold".to_string()
            },
        ),
    ];
    let r = |t: &str| render(t, &vars, uses);
    let (build, wasm) = match lang {
        Lang::Rust => {
            write(
                &dir.join("Cargo.toml"),
                &r(include_str!("templates/rust/Cargo.toml")),
            )?;
            write(
                &dir.join("src/lib.rs"),
                &r(include_str!("templates/rust/lib.rs")),
            )?;
            for (file, text) in SDK {
                // The SDK binds the WIT it carries beside it.
                let text = text.replace("path: \"../../wit\"", "path: \"wit\"");
                write(&dir.join("sdk").join(file), &text)?;
            }
            export_wit(&dir.join("sdk/wit"), None)?;
            write(&dir.join(".gitignore"), "/target\n")?;
            (
                "cargo build --release --target wasm32-wasip2".to_string(),
                format!("target/wasm32-wasip2/release/{crate_name}.wasm"),
            )
        }
        Lang::Python => {
            write(
                &dir.join("app.py"),
                &r(include_str!("templates/python/app.py")),
            )?;
            write(
                &dir.join("remedy_sdk.py"),
                include_str!("templates/python/remedy_sdk.py"),
            )?;
            write(&dir.join(".gitignore"), "*.wasm\n__pycache__/\n")?;
            (
                format!("componentize-py -d wit -w runbook componentize app -o {name}.wasm"),
                format!("{name}.wasm"),
            )
        }
        Lang::Js => {
            write(
                &dir.join("runbook.js"),
                &r(include_str!("templates/js/runbook.js")),
            )?;
            write(
                &dir.join("remedy.js"),
                include_str!("templates/js/remedy.js"),
            )?;
            write(&dir.join(".gitignore"), "*.wasm\nnode_modules/\n")?;
            (
                format!("componentize-js --wit wit --world-name runbook -d http -d fetch-event -o {name}.wasm runbook.js"),
                format!("{name}.wasm"),
            )
        }
    };
    // Every language builds against the narrowed world (Rust links only
    // what it calls; the WIT is there to read).
    export_wit(&dir.join("wit"), Some(uses))?;
    write(
        &dir.join("fixtures/healthy.toml"),
        &r(include_str!("templates/healthy.toml")),
    )?;
    if uses.contains(&Capability::Metrics) || uses.contains(&Capability::Database) {
        write(
            &dir.join("fixtures/incident.toml"),
            &r(include_str!("templates/incident.toml")),
        )?;
    }
    write(&dir.join("remedy.toml"), &settings(name, lang, uses, &wasm))?;
    write(
        &dir.join("README.md"),
        &readme(name, lang, uses, &build, &wasm),
    )?;
    Ok(())
}

/// The plugin's section for trying it locally (`remedy test -c
/// remedy.toml`, `remedy run -c remedy.toml`); the same keys go into the
/// server's config.
fn settings(name: &str, lang: Lang, uses: &BTreeSet<Capability>, wasm: &str) -> String {
    let grants: Vec<&str> = uses.iter().map(|c| c.as_str()).collect();
    let mut s = format!(
        "# This runbook's settings, for `remedy test -c remedy.toml {name}` and\n\
# `remedy run -c remedy.toml {name}`; the server's config takes the same section.\n\
[plugins.{name}]\npath = \"{wasm}\"\ngrants = {grants:?}\nmode = \"dry-run\"\n"
    );
    if lang != Lang::Rust {
        // CPython and StarlingMonkey start from a memory image of 13 MiB or
        // more, growing with what the runbook imports: room to grow.
        s.push_str("memory_mb = 128\n");
    }
    let mut scope = Vec::new();
    if uses.contains(&Capability::Database) {
        // A named placeholder, not `*`: a scaffold copied to production
        // as-is must not be able to terminate every application's sessions.
        s.push_str(
            "# Which sessions it may act on, by application_name: name YOUR applications\n\
# here (the fixtures' \"worker\" is a placeholder; \"*\" would allow every one).\n",
        );
        scope.push("database_applications = [\"worker\"]");
    }
    if uses.contains(&Capability::Logs) {
        s.push_str(
            "# The log sources it reads, by name; the server's config says where each\n\
# file is: [backends.logs.app] path = \"/var/log/app.log\".\n",
        );
        scope.push("log_sources = [\"app\"]");
    }
    if uses.contains(&Capability::Deploy) {
        s.push_str(
            "# Rollbacks go to the server's [backends.deploy] repo and branch, only in an\n\
# approved plan (mode = \"approve\") unless it sets auto_rollback = true.\n",
        );
    }
    if !scope.is_empty() {
        s.push_str(&format!("scope = {{ {} }}\n", scope.join(", ")));
    }
    s
}

fn readme(name: &str, lang: Lang, uses: &BTreeSet<Capability>, build: &str, wasm: &str) -> String {
    let toolchain = match lang {
        Lang::Rust => "Rust with the plugins' target: `rustup target add wasm32-wasip2`.",
        Lang::Python => "componentize-py (it bundles CPython; works offline once installed): `pip install componentize-py`.",
        Lang::Js => "componentize-js (StarlingMonkey inside; works offline once installed): `npm install -g @bytecodealliance/componentize-js`. A smaller, faster QuickJS build: `npx jco componentize --backend quickjs --backend-qjs-disable-async -w wit -n runbook -d http -d fetch-event -o NAME.wasm runbook.js` (Remedy has no component-model async, hence the flag; QuickJS passes u64 arguments as plain numbers, not BigInt).",
    };
    let grants: Vec<&str> = uses.iter().map(|c| c.as_str()).collect();
    format!(
        "# {name}\n\n\
A Remedy runbook, created by `remedy new`. It imports only the interfaces it uses \
({uses}); `wit/` holds the contract, with the world narrowed to them.\n\n\
## Build\n\nNeeds {toolchain}\n\n```sh\n{build}\n```\n\n\
## Test against fixtures\n\n\
`fixtures/*.toml` give the trigger, the config, the answers to every host call and what the \
run should come to. No network, no database (`remedy.toml` holds the plugin's grants and limits):\n\n```sh\nremedy test -c remedy.toml {name}\n```\n\n\
Record a real run as a new fixture: `remedy run -c remedy.toml {name} --record fixtures/NEW.toml` \
(with `[backends]` in remedy.toml, or `DATABASE_URL` and friends in the environment).\n\n\
## Load it\n\n\
Copy the `[plugins.{name}]` section of `remedy.toml` into the server's config (`mode = \"dry-run\"` \
first: watch it before it acts). `remedy inspect {wasm}` shows what it imports and its digest. For `remedy serve`: \
sign it (`minisign -S -m {wasm}`) when the server requires signatures, pin it by sha256, or \
drop it into `plugins_dir`. See Remedy's docs/writing-a-runbook.md.\n",
        uses = grants.join(", "),
    )
}
