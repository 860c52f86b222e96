//! `probe`: HTTP GET to allow-listed upstreams. The URL is checked against the
//! plugin's `scope.probe` patterns before any connection is made.

use crate::bindings::remedy::plugin::probe::{Host, Indicator, Response};
use crate::bindings::types::Error;
use crate::config::Capability;
use crate::scope::glob_match;

use super::HostCtx;

/// One allow-list entry: `scheme://host[:port]`; `*` globs in the host, a
/// port of `*` allows any port, no port means the scheme's default port.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowPattern {
    scheme: String,
    host: String,
    port: Option<u16>,
    any_port: bool,
}

impl AllowPattern {
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

impl Host for HostCtx {
    async fn get(&mut self, url: String) -> Result<Response, Error> {
        self.granted(Capability::Probe)?;
        let parsed =
            reqwest::Url::parse(&url).map_err(|e| Error::Invalid(format!("`{url}`: {e}")))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Error::Invalid(format!(
                "`{url}`: credentials in probe URLs are not allowed"
            )));
        }
        if !self.probe_allow.iter().any(|p| p.allows(&parsed)) {
            let msg = format!(
                "probe of {url} denied: outside the allow-list of {}",
                self.gate.plugin
            );
            self.gate.note(msg.clone());
            return Err(Error::Denied(msg));
        }
        let r = self.read("probe", self.backends.probe.get(&parsed)).await?;
        if r.truncated {
            self.gate.note(format!(
                "probe of {url}: body cut at {} bytes",
                r.body.len()
            ));
        }
        Ok(Response {
            status: r.status,
            body: r.body,
            truncated: r.truncated,
            elapsed_ms: r.elapsed_ms,
            indicator: r.indicator.map(|i| match i {
                crate::backends::Indicator::Operational => Indicator::Operational,
                crate::backends::Indicator::Minor => Indicator::Minor,
                crate::backends::Indicator::Major => Indicator::Major,
                crate::backends::Indicator::Critical => Indicator::Critical,
            }),
            description: r.description,
        })
    }
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
}
