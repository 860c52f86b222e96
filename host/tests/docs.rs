//! The book's links hold: every relative link in the README and under
//! `docs/` names a file that exists and, with `#anchor`, a heading in it;
//! every chapter is in the book's table of contents. (mdBook builds a book
//! with a broken link without a word; this is what fails instead.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            markdown_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
}

/// The text outside fenced code blocks and inline code spans.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            out.push('\n');
            continue;
        }
        if fenced {
            out.push('\n');
            continue;
        }
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            } else if !in_code {
                out.push(c);
            }
        }
        out.push('\n');
    }
    out
}

/// Link targets: `[text](target)`, `![alt](target)` and `[ref]: target`.
fn links(text: &str) -> Vec<String> {
    let text = prose(text);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            out.push(target.to_string());
        }
    }
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with('[') {
            if let Some((_, target)) = line.split_once("]: ") {
                out.push(target.trim().to_string());
            }
        }
    }
    out
}

/// Heading ids as mdBook and GitHub make them: lowercase, spaces to `-`,
/// punctuation dropped, a repeated heading suffixed `-1`, `-2`…
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        // `[text](url)` in a heading counts as its text.
        let mut plain = String::new();
        let mut rest = title;
        while let Some(open) = rest.find('[') {
            plain.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match (after.find("]("), after.find(')')) {
                (Some(close), Some(end)) if close < end => {
                    plain.push_str(&after[..close]);
                    rest = &after[end + 1..];
                }
                _ => {
                    plain.push('[');
                    rest = after;
                }
            }
        }
        plain.push_str(rest);
        let slug: String = plain
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let mut id = slug.clone();
        let mut n = 0;
        while out.contains(&id) {
            n += 1;
            id = format!("{slug}-{n}");
        }
        out.insert(id);
    }
    out
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let root = root();
    let mut files = vec![root.join("README.md")];
    markdown_files(&root.join("docs"), &mut files);
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let rel = file.strip_prefix(&root).unwrap().display().to_string();
        for target in links(&text) {
            if target.is_empty() || is_external(&target) {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            if !dest.exists() {
                broken.push(format!("{rel}: `{target}`: no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                if dest.extension().is_some_and(|x| x == "md") {
                    let heads = anchors(&std::fs::read_to_string(&dest).unwrap());
                    if !heads.contains(anchor) {
                        broken.push(format!("{rel}: `{target}`: no heading with that id"));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_chapter_is_in_the_table_of_contents() {
    let docs = root().join("docs");
    let summary = std::fs::read_to_string(docs.join("SUMMARY.md")).unwrap();
    let listed: BTreeSet<String> = links(&summary).into_iter().collect();
    let mut files = Vec::new();
    markdown_files(&docs, &mut files);
    let missing: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&docs).unwrap().display().to_string())
        .filter(|f| f != "SUMMARY.md" && !listed.contains(f))
        .collect();
    assert!(
        missing.is_empty(),
        "chapters the book's SUMMARY.md does not list (a reader would not find them): {missing:?}"
    );
}

/// The checker itself sees what it is meant to catch.
#[test]
fn the_checker_reads_links_and_headings_as_mdbook_does() {
    let text = "# Adding a capability\n## `remedy test`: fixtures\n## Notes\n## Notes\n\
                see [x](a.md#b) and ![i](p.png)\n```\n[not](a link)\n```\n[r]: ref.md\n";
    assert_eq!(links(text), ["a.md#b", "p.png", "ref.md"]);
    let heads = anchors(text);
    for id in [
        "adding-a-capability",
        "remedy-test-fixtures",
        "notes",
        "notes-1",
    ] {
        assert!(heads.contains(id), "{id} not in {heads:?}");
    }
}
