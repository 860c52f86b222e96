//! What a plugin is granted: interfaces (`Capability`) and the targets it
//! may act on or reach (`Scope`, glob patterns where `*` matches any run of
//! characters), with the one grant check every host call goes through.

use std::collections::BTreeSet;

use serde::Deserialize;

/// The registry of WIT interfaces a plugin may be granted: a line each
/// makes the [`Capability`] with its name (in grants, `--uses`, `--grant`
/// and messages) and its WIT text (what `remedy wit` and `remedy new`
/// write), read from `wit/NAME.wit`.
macro_rules! capabilities {
    ($($(#[$doc:meta])* $Var:ident = $name:literal),* $(,)?) => {
        /// A WIT interface a plugin may be granted.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, schemars::JsonSchema)]
        #[serde(rename_all = "lowercase")]
        pub enum Capability {
            $($(#[$doc])* $Var,)*
        }

        impl Capability {
            pub const ALL: &'static [Capability] = &[$(Capability::$Var),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Capability::$Var => $name,)*
                }
            }

            /// The interface's WIT, as this build implements it.
            pub fn wit(self) -> &'static str {
                match self {
                    $(Capability::$Var => include_str!(concat!("../../wit/", $name, ".wit")),)*
                }
            }
        }
    };
}

capabilities! {
    /// PromQL queries against `backends.prometheus_url`.
    Metrics = "metrics",
    /// PostgreSQL sessions: read, cancel, terminate.
    Database = "database",
    /// The application's circuit breakers: read, force a state.
    Breaker = "breaker",
    /// Redis: read, delete, expire, flush under granted prefixes.
    Cache = "cache",
    /// Notify channels, escalation by priority, templates.
    Notify = "notify",
    /// HTTP GETs to allow-listed upstreams.
    Probe = "probe",
    /// The plugin's own log lines: always granted.
    Log = "log",
    /// The application's log files, read-only.
    Logs = "logs",
    /// The deployed branch of a git repository; rollbacks.
    Deploy = "deploy",
}

/// The WIT every plugin's world uses besides the interfaces: the shared
/// types and the world itself.
pub const WIT_COMMON: [(&str, &str); 2] = [
    ("types.wit", include_str!("../../wit/types.wit")),
    ("world.wit", include_str!("../../wit/world.wit")),
];

impl Capability {
    pub fn parse(s: &str) -> Option<Capability> {
        Self::ALL.iter().copied().find(|c| c.as_str() == s)
    }

    /// `metrics, database, …`: the names, for messages.
    pub fn names() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|c| c.as_str()).collect();
        names.join(", ")
    }
}

/// The targets a plugin may act on or reach.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
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
    /// Names of the `[backends.logs.*]` sources `logs` may read.
    pub log_sources: Option<Vec<String>>,
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
        over(&mut self.log_sources, &other.log_sources);
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
            Capability::Logs => &mut self.log_sources,
            Capability::Probe => {
                let parsed = targets
                    .iter()
                    .map(|t| AllowPattern::parse(t))
                    .collect::<Result<Vec<_>, _>>()?;
                self.probe.get_or_insert_with(Vec::new).extend(parsed);
                return Ok(());
            }
            _ => return Err(format!("`{}` takes no targets", cap.as_str())),
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
/// The host may be a network (`http://10.0.0.0/8:*`, `http://[fd00::/8]`):
/// URLs with an address inside it.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String")]
#[schemars(with = "String", example = &"https://status.example.com", example = &"http://10.0.0.0/8:*")]
pub struct AllowPattern {
    scheme: String,
    host: String,
    port: Option<u16>,
    any_port: bool,
    /// The network, when the host is one (or an address: a /32 or /128).
    net: Option<(std::net::IpAddr, u8)>,
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
            net: None,
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
        // A `/` only as a network's prefix length (checked with the host).
        if rest.is_empty() || rest.contains('?') || rest.contains('@') {
            return Err(bad("only scheme, host and port are allowed"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            if !after.is_empty() && !after.starts_with(':') {
                return Err(bad("only scheme, host and port are allowed"));
            }
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
        let net =
            network(host.trim_start_matches('[').trim_end_matches(']')).map_err(|why| bad(&why))?;
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
            net,
        })
    }

    pub fn allows(&self, url: &reqwest::Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host_ok = match (self.net, url_ip(url)) {
            (Some(net), Some(ip)) => in_network(net, ip),
            (Some(_), None) => false,
            (None, _) => glob_match(&self.host, &host.to_ascii_lowercase()),
        };
        host_ok && self.scheme_and_port(url)
    }

    /// Whether this entry names `ip` for `url` explicitly: the URL's host
    /// written out without a glob, or an address or network holding `ip`.
    /// A probe reaches a private, loopback, link-local or own address only
    /// then; `https://*.example.com` never names one.
    pub fn names(&self, url: &reqwest::Url, ip: std::net::IpAddr) -> bool {
        if !self.scheme_and_port(url) {
            return false;
        }
        match self.net {
            Some(net) => in_network(net, ip),
            None => {
                !self.host.contains('*')
                    && url
                        .host_str()
                        .is_some_and(|h| h.eq_ignore_ascii_case(&self.host))
            }
        }
    }

    fn scheme_and_port(&self, url: &reqwest::Url) -> bool {
        let default_port = if self.scheme == "https" { 443 } else { 80 };
        url.scheme() == self.scheme
            && (self.any_port
                || url.port_or_known_default() == Some(self.port.unwrap_or(default_port)))
    }
}

/// The address a URL names literally, if it does.
pub fn url_ip(url: &reqwest::Url) -> Option<std::net::IpAddr> {
    let host = url.host_str()?;
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

/// A host written as an address (`10.0.0.7`) or network (`10.0.0.0/8`);
/// `None` for a name.
fn network(host: &str) -> Result<Option<(std::net::IpAddr, u8)>, String> {
    let (addr, len) = match host.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (host, None),
    };
    let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
        return match len {
            Some(_) => Err("only scheme, host and port are allowed".into()),
            None => Ok(None),
        };
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("`/{l}` is not a prefix length of 0 to {max}"))?,
    };
    if len == 0 {
        return Err("a network of `/0` would allow every address; name the network".into());
    }
    Ok(Some((ip, len)))
}

/// Is `ip` inside `net`? (An IPv4-mapped IPv6 address counts as its IPv4.)
pub fn in_network((base, len): (std::net::IpAddr, u8), ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr::{V4, V6};
    let ip = match ip {
        V6(v6) => v6.to_ipv4_mapped().map_or(ip, V4),
        v4 => v4,
    };
    match (base, ip) {
        (V4(b), V4(i)) => {
            let mask = u32::MAX.checked_shl(32 - len as u32).unwrap_or(0);
            u32::from(b) & mask == u32::from(i) & mask
        }
        (V6(b), V6(i)) => {
            let mask = u128::MAX.checked_shl(128 - len as u32).unwrap_or(0);
            u128::from(b) & mask == u128::from(i) & mask
        }
        _ => false,
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
        assert!(allows("http://10.0.0.0/8:*", "http://10.1.2.3:9000/"));
        assert!(!allows("http://10.0.0.0/8:*", "http://11.1.2.3:9000/"));
        assert!(!allows("http://10.0.0.0/8:*", "http://ten.example:9000/"));
        assert!(allows("http://[fd00::/8]", "http://[fd12::1]/"));
        for bad in [
            "status.stripe.com",
            "ftp://x",
            "https://x/path",
            "http://x:port",
            "https://",
            "http://10.0.0.0/0:*",
            "http://10.0.0.0/33",
            "http://ten/8",
            "http://[::1]/path",
        ] {
            assert!(AllowPattern::parse(bad).is_err(), "{bad}");
        }
    }

    /// Only an entry that writes the host out, or an address or network
    /// holding the address, names it: a glob never does.
    #[test]
    fn names_explicitly() {
        let names = |p: &str, u: &str, ip: &str| {
            AllowPattern::parse(p)
                .unwrap()
                .names(&reqwest::Url::parse(u).unwrap(), ip.parse().unwrap())
        };
        assert!(names(
            "http://localhost:8080",
            "http://localhost:8080/",
            "127.0.0.1"
        ));
        assert!(names("http://LOCALHOST:*", "http://localhost:1/", "::1"));
        assert!(!names(
            "http://local*:8080",
            "http://localhost:8080/",
            "127.0.0.1"
        ));
        assert!(!names(
            "http://localhost:8080",
            "http://localhost:8081/",
            "127.0.0.1"
        ));
        assert!(!names(
            "https://localhost:8080",
            "http://localhost:8080/",
            "127.0.0.1"
        ));
        assert!(!names(
            "https://*.corp.example",
            "https://db.corp.example/",
            "10.2.3.4"
        ));
        assert!(names(
            "https://10.0.0.0/8",
            "https://db.corp.example/",
            "10.2.3.4"
        ));
        assert!(names(
            "https://10.0.0.0/8",
            "https://db.corp.example/",
            "::ffff:10.2.3.4"
        ));
        assert!(!names(
            "https://10.0.0.0/8",
            "https://db.corp.example/",
            "192.168.0.1"
        ));
        assert!(names(
            "http://127.0.0.1:*",
            "http://127.0.0.1:4321/",
            "127.0.0.1"
        ));
        assert!(!names(
            "http://127.0.0.1:*",
            "http://127.0.0.1:4321/",
            "127.0.0.2"
        ));
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
