//! What a plugin is granted: interfaces (`Capability`) and the targets it
//! may act on or reach (`Scope`, glob patterns where `*` matches any run of
//! characters), with the one grant check every host call goes through.

use std::collections::BTreeSet;

use serde::Deserialize;

/// A WIT interface a plugin may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Metrics,
    Database,
    Breaker,
    Cache,
    Notify,
    Probe,
    Log,
}

impl Capability {
    pub const ALL: [Capability; 7] = [
        Capability::Metrics,
        Capability::Database,
        Capability::Breaker,
        Capability::Cache,
        Capability::Notify,
        Capability::Probe,
        Capability::Log,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Metrics => "metrics",
            Capability::Database => "database",
            Capability::Breaker => "breaker",
            Capability::Cache => "cache",
            Capability::Notify => "notify",
            Capability::Probe => "probe",
            Capability::Log => "log",
        }
    }

    pub fn parse(s: &str) -> Option<Capability> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The targets a plugin may act on or reach.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Breaker names `breaker.force-state` may act on.
    pub breakers: Option<Vec<String>>,
    /// `application_name`s whose sessions `database.cancel/terminate` may act on.
    pub database_applications: Option<Vec<String>>,
    /// Key prefixes `cache.delete/expire` may act on (plain prefixes, no globs).
    pub cache_prefixes: Option<Vec<String>>,
    /// Channel names `notify.send` may use.
    pub notify_channels: Option<Vec<String>>,
    /// `scheme://host[:port]` patterns `probe.get` may fetch.
    pub probe: Option<Vec<AllowPattern>>,
    /// Allows `cache.flush` (deleting everything under a granted prefix).
    /// Never on by default, not even for bundled plugins.
    pub cache_flush: Option<bool>,
}

impl Scope {
    /// `other`'s fields where it sets them (a config section over bundled
    /// defaults); `cache_flush` only ever comes from `other`.
    pub fn overlay(mut self, other: &Scope) -> Scope {
        fn over<T: Clone>(field: &mut Option<T>, value: &Option<T>) {
            if value.is_some() {
                field.clone_from(value);
            }
        }
        over(&mut self.breakers, &other.breakers);
        over(
            &mut self.database_applications,
            &other.database_applications,
        );
        over(&mut self.cache_prefixes, &other.cache_prefixes);
        over(&mut self.notify_channels, &other.notify_channels);
        over(&mut self.probe, &other.probe);
        self.cache_flush = other.cache_flush;
        self
    }

    /// Widens the scope of `cap` by `targets` (`--grant cap=target,...`).
    pub fn widen(&mut self, cap: Capability, targets: &[String]) -> Result<(), String> {
        if targets.is_empty() {
            return Ok(());
        }
        let field = match cap {
            Capability::Breaker => &mut self.breakers,
            Capability::Database => &mut self.database_applications,
            Capability::Cache => &mut self.cache_prefixes,
            Capability::Notify => &mut self.notify_channels,
            Capability::Probe => {
                let parsed = targets
                    .iter()
                    .map(|t| AllowPattern::parse(t))
                    .collect::<Result<Vec<_>, _>>()?;
                self.probe.get_or_insert_with(Vec::new).extend(parsed);
                return Ok(());
            }
            Capability::Metrics | Capability::Log => {
                return Err(format!("`{}` takes no targets", cap.as_str()))
            }
        };
        field
            .get_or_insert_with(Vec::new)
            .extend(targets.iter().cloned());
        Ok(())
    }
}

/// What a plugin was granted: interfaces and targets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grants {
    pub capabilities: BTreeSet<Capability>,
    pub scope: Scope,
}

impl Grants {
    pub fn has(&self, cap: Capability) -> bool {
        // `log` is harmless and capped: always granted.
        cap == Capability::Log || self.capabilities.contains(&cap)
    }

    /// The one grant check: `Err` is the `denied` message.
    pub fn check(&self, cap: Capability, plugin: &str) -> Result<(), String> {
        if self.has(cap) {
            Ok(())
        } else {
            Err(format!(
                "interface `{}` is not granted to {plugin}",
                cap.as_str()
            ))
        }
    }
}

/// One probe allow-list entry: `scheme://host[:port]`; `*` globs in the
/// host, a port of `*` allows any port, no port means the scheme's default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct AllowPattern {
    scheme: String,
    host: String,
    port: Option<u16>,
    any_port: bool,
}

impl TryFrom<String> for AllowPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        AllowPattern::parse(&s)
    }
}

impl AllowPattern {
    /// `https://HOST` (the bundled plugins' status pages).
    pub fn https(host: &str) -> AllowPattern {
        AllowPattern {
            scheme: "https".into(),
            host: host.to_ascii_lowercase(),
            port: None,
            any_port: false,
        }
    }

    pub fn parse(pattern: &str) -> Result<AllowPattern, String> {
        let bad =
            |why: &str| format!("probe pattern `{pattern}`: {why} (expected scheme://host[:port])");
        let (scheme, rest) = pattern.split_once("://").ok_or_else(|| bad("no scheme"))?;
        if !matches!(scheme, "http" | "https") {
            return Err(bad("scheme must be http or https"));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err(bad("only scheme, host and port are allowed"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (format!("[{h}]"), after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        let (port, any_port) = match port {
            None => (None, false),
            Some("*") => (None, true),
            Some(p) => (Some(p.parse::<u16>().map_err(|_| bad("bad port"))?), false),
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if host.trim_start_matches("*.") == "*" || host == "*" {
            return Err(bad(
                "a host of only `*` would allow every address; name the hosts",
            ));
        }
        Ok(AllowPattern {
            scheme: scheme.into(),
            host: host.to_ascii_lowercase(),
            port,
            any_port,
        })
    }

    pub fn allows(&self, url: &reqwest::Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let default_port = if self.scheme == "https" { 443 } else { 80 };
        url.scheme() == self.scheme
            && glob_match(&self.host, &host.to_ascii_lowercase())
            && (self.any_port
                || url.port_or_known_default() == Some(self.port.unwrap_or(default_port)))
    }
}

/// Does `text` match the glob `pattern` (only `*` is special)?
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Does any of `patterns` match `text`?
pub fn any_match(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| glob_match(p, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(p: &str, u: &str) -> bool {
        AllowPattern::parse(p)
            .unwrap()
            .allows(&reqwest::Url::parse(u).unwrap())
    }

    #[test]
    fn allow_list() {
        assert!(allows(
            "https://status.stripe.com",
            "https://status.stripe.com/api/v2/status.json"
        ));
        assert!(!allows(
            "https://status.stripe.com",
            "http://status.stripe.com/"
        ));
        assert!(!allows(
            "https://status.stripe.com",
            "https://status.stripe.com:8443/"
        ));
        assert!(!allows(
            "https://status.stripe.com",
            "https://status.stripe.com.evil.io/"
        ));
        assert!(allows("http://127.0.0.1:*", "http://127.0.0.1:4321/x"));
        assert!(!allows("http://127.0.0.1:4321", "http://127.0.0.1:4322/x"));
        assert!(allows(
            "https://*.statuspage.io",
            "https://acme.statuspage.io/api"
        ));
        assert!(allows("http://[::1]:8080", "http://[::1]:8080/"));
        for bad in [
            "status.stripe.com",
            "ftp://x",
            "https://x/path",
            "http://x:port",
            "https://",
        ] {
            assert!(AllowPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("stripe", "stripe"));
        assert!(!glob_match("stripe", "stripes"));
        assert!(glob_match("remedy-test-*", "remedy-test-42"));
        assert!(!glob_match("remedy-test-*", "remedy-prod"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(!glob_match("", "x"));
    }
}
