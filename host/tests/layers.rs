//! The host's modules import only downwards, in the order of
//! docs/layout.md: a new import that points up (or closes a cycle)
//! fails here, naming the file and the edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of `host/src` and its layer; a module may import
/// modules of its own layer or below (never a cycle within a layer).
const LAYERS: &[(&str, u8)] = &[
    // Leaf types: vocabulary, units, grants, records, config.
    ("bindings", 0),
    ("units", 0),
    ("action", 0),
    ("grants", 0),
    ("escalation", 0),
    ("killswitch", 0),
    ("locks", 0),
    ("private_fs", 0),
    ("record", 0),
    ("signature", 0),
    ("redact", 0),
    ("journal", 0),
    ("guardrails", 0),
    ("config", 0),
    ("telemetry", 0),
    ("bundled", 0),
    ("permit", 0),
    ("backends", 1),
    ("alertmanager", 1),
    ("gate", 2),
    ("capabilities", 3),
    ("runtime", 4),
    ("remedy", 5),
    ("store", 6),
    ("chat", 6),
    ("fixture", 6),
    ("report", 7),
    ("service", 7),
    ("triggers", 8),
    ("serve", 9),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The node a file belongs to.
fn node_of(rel: &Path) -> String {
    let parts: Vec<String> = rel
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    parts[0].clone()
}

/// Every `crate::a` a source names outside its tests, including grouped
/// `use crate::{a, b::c}`.
fn imports(src: &str) -> BTreeSet<String> {
    let code = match src.find("#[cfg(test)]") {
        Some(i) => &src[..i],
        None => src,
    };
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut add = |path: &str| {
        let first = ident(path);
        if !first.is_empty() {
            out.insert(first);
        }
    };
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                add(item.trim());
            }
        } else {
            add(rest);
        }
    }
    out
}

#[test]
fn host_modules_import_only_downwards_and_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rank: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        // `lib.rs` only declares the modules; `bin/` is the CLI, a crate of
        // its own on top of the library.
        if rel == Path::new("lib.rs") || rel.starts_with("bin") {
            continue;
        }
        let node = node_of(rel);
        let Some(&from) = rank.get(node.as_str()) else {
            problems.push(format!(
                "{}: module `{node}` has no layer: add it to LAYERS in host/tests/layers.rs and to docs/layout.md",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap();
        for to in imports(&text) {
            if to == node {
                continue;
            }
            let Some(&layer) = rank.get(to.as_str()) else {
                continue;
            };
            if layer > from {
                problems.push(format!(
                    "{}: `{node}` (layer {from}) imports `{to}` (layer {layer}), which is above it",
                    rel.display()
                ));
            }
            graph.entry(node.clone()).or_default().insert(to);
        }
    }
    // Within a layer, imports must not form a cycle.
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == n) {
            cycles.push(format!("{} -> {n}", path[i..].join(" -> ")));
            return;
        }
        if !done.insert(n.to_string()) {
            return;
        }
        path.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            visit(m, graph, path, done, cycles);
        }
        path.pop();
    }
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        visit(n, &graph, &mut Vec::new(), &mut done, &mut cycles);
    }
    problems.extend(cycles.into_iter().map(|c| format!("import cycle: {c}")));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The check itself notices what it is meant to catch.
#[test]
fn the_check_sees_grouped_and_nested_imports() {
    let found = imports(
        "use crate::{record::RunRecord, gate::Gate};\nfn f() { crate::triggers::x(); }\n#[cfg(test)]\nuse crate::serve;",
    );
    assert_eq!(
        found,
        ["gate", "record", "triggers"].map(String::from).into()
    );
}

/// `Permit::new` is `pub(crate)` (outside the crate it does not exist):
/// inside it, the gate is the only caller, so every mutation passes it.
#[test]
fn only_the_gate_makes_permits() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let makers: Vec<String> = files
        .iter()
        .filter(|f| {
            // `_sealed` is private to permit.rs: a literal cannot be
            // written elsewhere, so the constructor is the only way.
            let text = std::fs::read_to_string(f).unwrap();
            text.match_indices("Permit::new(").any(|(i, _)| {
                !text[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
        })
        .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
        .filter(|rel| rel != "permit.rs" && !rel.starts_with("gate/"))
        .collect();
    assert!(
        makers.is_empty(),
        "only the gate may make a Permit; also made in: {makers:?}"
    );
}
