//! Secrets out of what Remedy writes down: a fixture of `remedy run
//! --record`, the `params` of a run record. A value is redacted when its key
//! names a secret (`api_token`, `slack_webhook`, `dsn`, …) or when it looks
//! like one wherever it sits: a URL's password, query values and secret
//! path segments (`hooks.slack.com/services/…`), tokens with a known prefix
//! (`sk_live_…`, `xoxb-…`, `ghp_…`, `AKIA…`), long random-looking tokens,
//! and the value after `password=`, `token:` or `Bearer `.
//!
//! A secret becomes `REDACTED<n>`, the same secret the same placeholder in
//! every place (a replayed fixture still finds the probe URL or cache key
//! its config leads to) and two secrets never one (two redacted keys stay
//! two keys). What was a URL stays a URL, a known prefix stays in front, so
//! a placeholder still parses and still matches its glob.

use std::collections::{BTreeMap, HashMap};

/// What a secret becomes, followed by its number.
pub const PLACEHOLDER: &str = "REDACTED";

/// A token shorter than this is never taken for random.
const RANDOM_MIN_LEN: usize = 20;

/// Token prefixes of well-known secrets, each with the shortest rest that
/// makes it one (so that a word starting the same way is left alone).
const PREFIXES: &[(&str, usize)] = &[
    ("sk_live_", 8),
    ("sk_test_", 8),
    ("rk_live_", 8),
    ("rk_test_", 8),
    ("whsec_", 8),
    ("xoxb-", 8),
    ("xoxp-", 8),
    ("xoxa-", 8),
    ("xoxr-", 8),
    ("xoxs-", 8),
    ("xapp-", 8),
    ("ghp_", 16),
    ("gho_", 16),
    ("ghu_", 16),
    ("ghs_", 16),
    ("ghr_", 16),
    ("github_pat_", 16),
    ("glpat-", 16),
    ("AKIA", 12),
    ("ASIA", 12),
    ("AIza", 30),
];

/// Hosts whose URLs carry their secret in the path: every segment after
/// the marker is the secret.
const HOOK_PATHS: &[(&str, &str)] = &[
    ("hooks.slack.com", "services"),
    ("hooks.slack.com", "workflows"),
    ("hooks.slack.com", "triggers"),
    ("discord.com", "webhooks"),
    ("discordapp.com", "webhooks"),
    ("webhook.office.com", "webhookb2"),
    ("outlook.office.com", "webhook"),
];

/// A key (config key, param, label) whose value is a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    const WITHIN: &[&str] = &[
        "secret",
        "token",
        "password",
        "passwd",
        "passphrase",
        "credential",
        "api_key",
        "apikey",
        "private",
        "webhook",
        "bearer",
        "cookie",
        "authorization",
    ];
    if WITHIN.iter().any(|w| k.contains(w)) {
        return true;
    }
    let words: Vec<&str> = k
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let word = |w: &str| words.contains(&w);
    // `routing_key`, `access_key`, `signing_key`; not `key_prefix`, `keys`.
    let named_key = words.len() > 1 && words.last() == Some(&"key");
    ["dsn", "auth", "oauth", "pwd", "pass", "sig"]
        .iter()
        .any(|w| word(w))
        || named_key
}

/// A name whose value follows it in running text (`password=…`,
/// `api_key: …`): narrower than [`is_secret_key`], so that ordinary text
/// such as a label `auth_method="oidc"` is left alone.
fn is_inline_name(token: &str) -> bool {
    let k = token.to_ascii_lowercase().replace('-', "_");
    [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "access_key",
        "private_key",
        "credential",
    ]
    .iter()
    .any(|w| k.contains(w))
        || k == "pwd"
}

/// `REDACTED` or `REDACTED<n>`: already redacted.
pub fn is_placeholder(s: &str) -> bool {
    s.strip_prefix(PLACEHOLDER)
        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// A token that reads as random rather than as a name: long, changing
/// between upper case, lower case and digits at least every third
/// character within its words, and either mixing all three (base64) or
/// holding one long word of two (hex, base36). Names (`snake_case`,
/// `camelCase`, `pg_stat_activity_2024`), UUIDs and pod names
/// (`api-7d9f8b6c5d-x2k4p`: short words) are not.
pub fn looks_random(token: &str) -> bool {
    if token.len() < RANDOM_MIN_LEN || is_placeholder(token) {
        return false;
    }
    #[derive(PartialEq, Clone, Copy)]
    enum Class {
        Upper,
        Lower,
        Digit,
    }
    let class = |c: char| match c {
        'A'..='Z' => Some(Class::Upper),
        'a'..='z' => Some(Class::Lower),
        '0'..='9' => Some(Class::Digit),
        _ => None,
    };
    let (mut alnum, mut changes, mut longest) = (0usize, 0usize, 0usize);
    let mut seen = [false; 3];
    for word in token.split(|c: char| !c.is_ascii_alphanumeric()) {
        longest = longest.max(word.len());
        let mut prev = None;
        for c in word.chars().filter_map(class) {
            alnum += 1;
            seen[c as usize] = true;
            if prev.is_some_and(|p| p != c) {
                changes += 1;
            }
            prev = Some(c);
        }
    }
    let classes = seen.iter().filter(|s| **s).count();
    alnum >= 16 && changes * 10 >= alnum * 3 && (classes == 3 || (classes == 2 && longest >= 16))
}

/// The secret part of a token with a known prefix: (where it starts).
fn prefixed_secret(token: &str) -> Option<usize> {
    let bytes = token.as_bytes();
    (0..token.len())
        .filter(|&i| token.is_char_boundary(i))
        .filter(|&i| i == 0 || !bytes[i - 1].is_ascii_alphanumeric())
        .find_map(|i| {
            PREFIXES.iter().find_map(|(p, min)| {
                let rest = token[i..].strip_prefix(p)?;
                let aws = p.chars().all(|c| c.is_ascii_uppercase());
                let ok = rest.len() >= *min
                    && !is_placeholder(rest)
                    && if aws {
                        rest.chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                    } else {
                        rest.chars().any(|c| c.is_ascii_digit())
                            || (rest.chars().any(|c| c.is_ascii_uppercase())
                                && rest.chars().any(|c| c.is_ascii_lowercase()))
                    };
                ok.then_some(i + p.len())
            })
        })
}

/// Where a URL (`scheme://…`) starts and ends in `s`.
fn find_url(s: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(at) = s[from..].find("://").map(|i| i + from) {
        let start = s[..at]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
            .last()
            .map(|(i, _)| i);
        if let Some(start) = start.filter(|&i| s.as_bytes()[i].is_ascii_alphabetic()) {
            let end = s[at..]
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
                .map_or(s.len(), |i| i + at);
            return Some((start, end));
        }
        from = at + 3;
    }
    None
}

/// Redacts strings, keeping count of where. One redactor per document
/// (a fixture, a record's params): its placeholders are numbered in it.
#[derive(Default)]
pub struct Redactor {
    /// Each secret redacted and its placeholder.
    seen: HashMap<String, String>,
    /// Values of secret keys, longest first, and what they became: the same
    /// value elsewhere (a token pasted into a URL) goes too.
    known: Vec<(String, String)>,
    /// Where values were redacted, and how many there.
    changes: BTreeMap<String, usize>,
    /// Values known to name content, not to hide it (a commit id): never
    /// taken for secrets by their shape.
    public: std::collections::HashSet<String>,
}

impl Redactor {
    pub fn new() -> Redactor {
        Redactor::default()
    }

    /// Notes the value of a secret key, so that it is redacted wherever it
    /// shows up in the document, not only under its key. Values too short
    /// to be told from ordinary text are redacted under their key only.
    pub fn learn(&mut self, key: &str, value: &str) {
        if !is_secret_key(key) || value.trim().len() < 6 || value.contains(PLACEHOLDER) {
            return;
        }
        if self.known.iter().any(|(k, _)| k == value) {
            return;
        }
        let redacted = self.secret_value(value);
        self.known.push((value.to_string(), redacted));
        self.known.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    }

    /// The value of `key`: whole when the key names a secret (a URL stays
    /// a URL), else as [`Redactor::text`].
    pub fn keyed(&mut self, path: &str, key: &str, value: &str) -> String {
        if !is_secret_key(key) {
            return self.text(path, value);
        }
        let out = self.secret_value(value);
        self.note(path, value, &out);
        out
    }

    /// `value` with every secret-looking part replaced.
    pub fn text(&mut self, path: &str, value: &str) -> String {
        let mut s = value.to_string();
        for (secret, redacted) in &self.known {
            if s.contains(secret.as_str()) {
                s = s.replace(secret.as_str(), redacted);
            }
        }
        let out = self.shape(&s);
        self.note(path, value, &out);
        out
    }

    /// How many values were redacted.
    pub fn count(&self) -> usize {
        self.changes.values().sum()
    }

    /// Where values were redacted, and how many there.
    pub fn changes(&self) -> &BTreeMap<String, usize> {
        &self.changes
    }

    fn note(&mut self, path: &str, before: &str, after: &str) {
        if before != after {
            *self.changes.entry(path.to_string()).or_default() += 1;
        }
    }

    fn placeholder(&mut self, secret: &str) -> String {
        if is_placeholder(secret) {
            return secret.to_string();
        }
        let n = self.seen.len() + 1;
        self.seen
            .entry(secret.to_string())
            .or_insert_with(|| format!("{PLACEHOLDER}{n}"))
            .clone()
    }

    /// A secret key's value: a URL keeps its scheme and host.
    fn secret_value(&mut self, v: &str) -> String {
        if v.trim().is_empty() || v.contains(PLACEHOLDER) {
            return v.to_string();
        }
        if find_url(v) == Some((0, v.len())) {
            if let Ok(mut u) = reqwest::Url::parse(v) {
                if let Some(shaped) = self.url(v) {
                    return shaped;
                }
                let p = self.placeholder(v);
                u.set_path(&format!("/{p}"));
                u.set_query(None);
                u.set_fragment(None);
                return u.to_string();
            }
        }
        self.placeholder(v)
    }

    fn shape(&mut self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some((start, end)) = find_url(rest) {
            out.push_str(&self.plain(&rest[..start]));
            let u = &rest[start..end];
            match self.url(u) {
                Some(r) => out.push_str(&r),
                None => out.push_str(u),
            }
            rest = &rest[end..];
        }
        out.push_str(&self.plain(rest));
        out
    }

    /// `value` names content (a git commit id, which looks random but is
    /// printed in every log and chat): its shape alone never redacts it.
    pub fn allow(&mut self, value: &str) {
        self.public.insert(value.to_string());
    }

    /// A token redacted if it is a secret by its shape.
    fn token(&mut self, t: &str) -> Option<String> {
        if self.public.contains(t) {
            return None;
        }
        if let Some(at) = prefixed_secret(t) {
            return Some(format!("{}{}", &t[..at], self.placeholder(&t[at..])));
        }
        looks_random(t).then(|| self.placeholder(t))
    }

    /// Text without URLs: tokens by their shape, and the value after a
    /// secret's name (`password=…`, `token: …`, `Bearer …`).
    fn plain(&mut self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            let c = s[i..].chars().next().unwrap_or(' ');
            if !is_token_char(c) {
                out.push(c);
                i += c.len_utf8();
                continue;
            }
            let end = s[i..]
                .find(|c: char| !is_token_char(c))
                .map_or(s.len(), |e| e + i);
            let t = &s[i..end];
            match self.token(t) {
                Some(r) => out.push_str(&r),
                None => out.push_str(t),
            }
            i = end;
            if let Some((sep, value)) = value_after(t, &s[end..]) {
                out.push_str(&s[end..end + sep]);
                let v = &s[end + sep..end + sep + value];
                out.push_str(&self.placeholder(v));
                i = end + sep + value;
            }
        }
        out
    }

    /// A URL with its password, query values, fragment and secret path
    /// segments redacted; `None` when it has none (left byte for byte).
    fn url(&mut self, s: &str) -> Option<String> {
        let mut u = reqwest::Url::parse(s).ok()?;
        let mut changed = false;
        if let Some(pw) = u
            .password()
            .filter(|p| !is_placeholder(p))
            .map(String::from)
        {
            let p = self.placeholder(&pw);
            changed |= u.set_password(Some(&p)).is_ok();
        } else if u.password().is_none() && !u.username().is_empty() {
            let user = u.username().to_string();
            if let Some(r) = self.token(&user) {
                changed |= u.set_username(&r).is_ok();
            }
        }
        if let Some(segments) = u
            .path_segments()
            .map(|s| s.map(String::from).collect::<Vec<_>>())
        {
            let host = u.host_str().unwrap_or("").to_ascii_lowercase();
            let hook = HOOK_PATHS
                .iter()
                .filter(|(h, _)| host == *h || host.ends_with(&format!(".{h}")))
                .find_map(|(_, marker)| segments.iter().position(|s| s == marker))
                .filter(|&at| at + 1 < segments.len());
            let new: Vec<String> = match hook {
                Some(at) if !(segments.len() == at + 2 && is_placeholder(&segments[at + 1])) => {
                    let secret = segments[at + 1..].join("/");
                    let mut v = segments[..=at].to_vec();
                    v.push(self.placeholder(&secret));
                    v
                }
                _ => segments
                    .iter()
                    .map(|seg| self.token(seg).unwrap_or_else(|| seg.clone()))
                    .collect(),
            };
            if new != segments {
                u.set_path(&format!("/{}", new.join("/")));
                changed = true;
            }
        }
        if let Some(q) = u.query().map(String::from) {
            let new = self.pairs(&q, true);
            if new != q {
                u.set_query(Some(&new));
                changed = true;
            }
        }
        // A fragment is mostly an anchor (`#leaks`); as `k=v` pairs it
        // carries tokens (OAuth's implicit flow).
        if let Some(f) = u.fragment().map(String::from) {
            let new = self.pairs(&f, false);
            if new != f {
                u.set_fragment(Some(&new));
                changed = true;
            }
        }
        changed.then(|| u.to_string())
    }

    /// `k=v&…` with each value redacted (all of them when `all`, else only
    /// values, plus lone tokens that are secrets by their shape).
    fn pairs(&mut self, s: &str, all: bool) -> String {
        s.split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if !v.is_empty() => format!("{k}={}", self.placeholder(v)),
                Some(_) => pair.to_string(),
                None if all => pair.to_string(),
                None => self.token(pair).unwrap_or_else(|| pair.to_string()),
            })
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// After the token `name` and then `rest`: the separator's length and the
/// value's, when `name` names a secret whose value follows.
fn value_after(name: &str, rest: &str) -> Option<(usize, usize)> {
    let bearer = name.eq_ignore_ascii_case("bearer") || name.eq_ignore_ascii_case("basic");
    if !bearer && !is_inline_name(name) {
        return None;
    }
    let spaces = |s: &str| s.len() - s.trim_start_matches(' ').len();
    let mut sep = spaces(rest);
    if bearer {
        if sep == 0 {
            return None;
        }
    } else {
        let colon = rest[sep..].starts_with(':');
        if !colon && !rest[sep..].starts_with('=') {
            return None;
        }
        sep += 1;
        let gap = spaces(&rest[sep..]);
        sep += gap;
        let quoted = rest[sep..].starts_with(['"', '\'']);
        // `secret: Stripe Dashboard` is prose; `token:abc` and
        // `api_key: 'abc'` are not.
        if colon && gap > 0 && !quoted {
            return None;
        }
        if quoted {
            sep += 1;
        }
    }
    let value = rest[sep..]
        .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ';' | '&' | ')' | '}'))
        .unwrap_or(rest.len() - sep);
    (value > 0 && !is_placeholder(&rest[sep..sep + value])).then_some((sep, value))
}

/// A run's params as a record keeps them: the same rules, each value under
/// its key.
pub fn params(params: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut r = Redactor::new();
    for (k, v) in params {
        r.learn(k, v);
    }
    params
        .iter()
        .map(|(k, v)| {
            let path = format!("params.{k}");
            (r.text(&path, k), r.keyed(&path, k, v))
        })
        .collect()
}

#[cfg(test)]
mod tests;
