//! Which addresses a probe may connect to. The host is resolved once, every
//! address it resolves to is checked, and the connection goes to those
//! checked addresses (no second lookup, so no DNS-rebinding window).
//! Loopback, this machine's own, link-local (cloud metadata), private
//! (RFC 1918), shared (CGNAT) and unique-local addresses, and their
//! IPv4-mapped forms, are reached only when the plugin's allow-list names
//! the host without a glob, or the address or a network holding it: an
//! entry such as `https://*.example.com` must not reach inside through a
//! DNS record someone else controls. The unspecified address never.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::backends::BackendResult;
use crate::grants::AllowPattern;

use super::backend::{ProbeBackend, ProbeResponse};

/// A probe refused before any connection: the message says which address
/// and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// What kind of inside address `ip` is; `None` for a public one.
pub fn inside(ip: IpAddr, own: &[IpAddr]) -> Option<&'static str> {
    if own.iter().any(|o| canonical(*o) == canonical(ip)) && !canonical(ip).is_loopback() {
        return Some("an address of this machine");
    }
    match canonical(ip) {
        IpAddr::V4(v4) => v4_inside(v4),
        IpAddr::V6(v6) => v6_inside(v6),
    }
}

/// The IPv4 address an IPv6 one stands for (IPv4-mapped `::ffff:a.b.c.d`,
/// NAT64 `64:ff9b::a.b.c.d`), else itself.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return IpAddr::V4(Ipv4Addr::from(u128::from(v6) as u32));
            }
            ip
        }
        v4 => v4,
    }
}

fn v4_inside(v4: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = v4.octets();
    if a == 0 {
        Some(UNSPECIFIED)
    } else if v4.is_loopback() {
        Some("a loopback address")
    } else if v4.is_link_local() {
        Some("a link-local address (cloud metadata answers there)")
    } else if v4.is_private() {
        Some("a private (RFC 1918) address")
    } else if a == 100 && (b & 0xc0) == 64 {
        Some("a shared (CGNAT, 100.64.0.0/10) address")
    } else {
        None
    }
}

fn v6_inside(v6: Ipv6Addr) -> Option<&'static str> {
    let first = v6.segments()[0];
    if v6.is_unspecified() {
        Some(UNSPECIFIED)
    } else if v6.is_loopback() {
        Some("a loopback address")
    } else if (first & 0xffc0) == 0xfe80 {
        Some("a link-local address")
    } else if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Some("the cloud metadata address")
    } else if (first & 0xfe00) == 0xfc00 {
        Some("a unique-local (fc00::/7) address")
    } else {
        None
    }
}

const UNSPECIFIED: &str = "the unspecified address";

/// `Ok` when every address in `addrs` may be reached for `url` under
/// `allowed`; else which one may not, and why.
pub fn check(
    url: &reqwest::Url,
    addrs: &[IpAddr],
    allowed: &[AllowPattern],
    own: &[IpAddr],
) -> Result<(), Refused> {
    let host = url.host_str().unwrap_or_default();
    for &ip in addrs {
        let Some(what) = inside(ip, own) else {
            continue;
        };
        let resolved = match crate::grants::url_ip(url) {
            Some(_) => format!("{host} is {what}"),
            None => format!("{host} resolves to {ip}, {what}"),
        };
        if what == UNSPECIFIED {
            return Err(Refused(format!("probe of {url} refused: {resolved}")));
        }
        if !allowed.iter().any(|p| p.names(url, ip)) {
            return Err(Refused(format!(
                "probe of {url} refused: {resolved}; a probe reaches one only when the \
                 allow-list names the host without a glob, or the address or its network \
                 (e.g. `{}://{ip_host}:*`)",
                url.scheme(),
                ip_host = match ip {
                    IpAddr::V4(_) => ip.to_string(),
                    IpAddr::V6(_) => format!("[{ip}]"),
                }
            )));
        }
    }
    Ok(())
}

/// Resolves `url`'s host, checks every address, and fetches from those
/// addresses. The outer error is the backend's; the inner one a refusal.
pub async fn fetch(
    backend: &dyn ProbeBackend,
    url: &reqwest::Url,
    allowed: &[AllowPattern],
) -> BackendResult<Result<ProbeResponse, Refused>> {
    let addrs = backend.resolve(url).await?;
    let own = own_addresses().map_err(|e| {
        crate::backends::BackendError::Unavailable(format!(
            "probe of {url}: cannot list this machine's addresses to check it: {e}"
        ))
    })?;
    if let Err(refused) = check(url, &addrs, allowed, &own) {
        return Ok(Err(refused));
    }
    backend.get(url, &addrs).await.map(Ok)
}

/// The addresses of this machine's interfaces, read afresh each time (an
/// interface may come up or change its address).
#[cfg(unix)]
pub fn own_addresses() -> std::io::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list that is only read here, through
    // pointers it set (each checked for null), and freed once below.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut cur = head;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn inside_addresses_in_every_form() {
        for (addr, what) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("::ffff:0.0.0.0", "unspecified"),
            ("169.254.169.254", "link-local"),
            ("::ffff:169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("fd00:ec2::254", "metadata"),
            ("10.0.0.1", "RFC 1918"),
            ("10.255.255.255", "RFC 1918"),
            ("172.16.0.1", "RFC 1918"),
            ("172.31.255.254", "RFC 1918"),
            ("192.168.1.1", "RFC 1918"),
            ("::ffff:10.1.2.3", "RFC 1918"),
            ("64:ff9b::10.1.2.3", "RFC 1918"),
            ("::ffff:192.168.0.9", "RFC 1918"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.254", "CGNAT"),
            ("::ffff:100.64.0.1", "CGNAT"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
        ] {
            let said = inside(ip(addr), &[]).unwrap_or_else(|| panic!("{addr} is inside"));
            assert!(said.contains(what), "{addr}: {said}");
        }
        for public in [
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.0.2.1",
            "2606:4700::1",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(inside(ip(public), &[]), None, "{public}");
        }
    }

    /// The finding: a name resolving to this machine's own (non-loopback)
    /// address reached a local service.
    #[test]
    fn this_machines_own_addresses_are_inside() {
        let own = own_addresses().unwrap();
        assert!(own.contains(&ip("127.0.0.1")), "{own:?}");
        for a in &own {
            assert!(inside(*a, &own).is_some(), "{a} of {own:?}");
        }
        // A public address, once it is this machine's, is inside (and in
        // its IPv4-mapped form too).
        let mine = [ip("192.0.2.77")];
        assert_eq!(inside(ip("192.0.2.77"), &[]), None);
        assert_eq!(
            inside(ip("192.0.2.77"), &mine),
            Some("an address of this machine")
        );
        assert_eq!(
            inside(ip("::ffff:192.0.2.77"), &mine),
            Some("an address of this machine")
        );
    }

    #[test]
    fn inside_addresses_need_an_allow_list_entry_that_names_them() {
        let url = reqwest::Url::parse("http://status.corp.example:8080/health").unwrap();
        let glob = vec![AllowPattern::parse("http://*.corp.example:*").unwrap()];
        let named = vec![AllowPattern::parse("http://status.corp.example:8080").unwrap()];
        let net = vec![
            AllowPattern::parse("http://*.corp.example:*").unwrap(),
            AllowPattern::parse("http://10.0.0.0/8:*").unwrap(),
        ];
        let private = [ip("10.1.2.3")];
        let err = check(&url, &private, &glob, &[]).unwrap_err().0;
        assert!(
            err.contains("status.corp.example resolves to 10.1.2.3, a private (RFC 1918) address"),
            "{err}"
        );
        assert!(check(&url, &private, &named, &[]).is_ok());
        assert!(check(&url, &private, &net, &[]).is_ok());
        // Every address counts, not just the first.
        let mixed = [ip("203.0.113.5"), ip("192.168.0.1")];
        assert!(check(&url, &mixed, &net, &[]).is_err());
        assert!(check(&url, &[ip("203.0.113.5")], &glob, &[]).is_ok());
        // The unspecified address, never.
        assert!(check(&url, &[ip("0.0.0.0")], &named, &[]).is_err());
    }
}
