//! The small part of URL handling WebTransport clients need: `https://host[:port][/path][?query]`.
//!
//! Parsing is pure. [`Target::resolve`] is the one place in this crate that asks the system for something (a
//! name lookup, for host names; IP literals need none): drivers share it rather than each writing their own.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// A URL that cannot be used, or a host that does not resolve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The URL is not an `https://host[:port]/path` URL.
    #[error("invalid URL {url:?}: {reason}")]
    Invalid {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host name did not resolve to an address of the wanted family.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
}

/// A parsed `https` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The host, without IPv6 brackets.
    pub host: String,
    /// The port (443 when absent).
    pub port: u16,
    /// `:authority` as written in the URL (host and port).
    pub authority: String,
    /// `:path`, with the query, starting with `/`.
    pub path: String,
}

impl Target {
    /// Parses an `https://` URL.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let bad = |reason: &str| UrlError::Invalid {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .get(..8)
            .filter(|s| s.eq_ignore_ascii_case("https://"))
            .map(|_| &url[8..])
            .ok_or_else(|| bad("WebTransport URLs start with https://"))?;
        let rest = rest.split('#').next().unwrap_or("");
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        if authority.contains('@') {
            return Err(bad("user information is not allowed"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let close = v6.find(']').ok_or_else(|| bad("unclosed '[' in host"))?;
            let host = &v6[..close];
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("invalid IPv6 address"))?;
            let after = &v6[close + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("unexpected text after ']'")),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 443,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("invalid port"))?,
        };
        let path = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad("spaces or control characters in the path"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            path,
        })
    }

    /// True when the host is an IP literal.
    pub fn is_ip(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }

    /// Resolves the host to an address of the same family as `local` (an IP literal needs no lookup; a name
    /// is resolved with the system resolver).
    pub fn resolve(&self, local: SocketAddr) -> Result<SocketAddr, UrlError> {
        let fail = |reason: String| UrlError::Resolve {
            host: self.host.clone(),
            reason,
        };
        let addrs: Vec<SocketAddr> = match self.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, self.port)],
            Err(_) => (self.host.as_str(), self.port)
                .to_socket_addrs()
                .map_err(|e| fail(e.to_string()))?
                .collect(),
        };
        addrs
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == local.is_ipv4())
            .ok_or_else(|| {
                fail(format!(
                    "no {} address (found {:?}); bind the endpoint to the other family",
                    if local.is_ipv4() { "IPv4" } else { "IPv6" },
                    addrs
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let t = Target::parse("https://example.com:4433/chat?room=1#frag").unwrap();
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.authority.as_str(),
                t.path.as_str()
            ),
            ("example.com", 4433, "example.com:4433", "/chat?room=1")
        );
        let t = Target::parse("HTTPS://[::1]:9/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        assert!(t.is_ip());
        let t = Target::parse("https://localhost").unwrap();
        assert_eq!((t.port, t.path.as_str()), (443, "/"));
        let t = Target::parse("https://h?x=1").unwrap();
        assert_eq!(t.path, "/?x=1");
    }

    #[test]
    fn rejects_bad_urls() {
        for u in [
            "http://x/",
            "https://",
            "https://:443/",
            "https://x:0/",
            "https://x:99999/",
            "https://[::1/",
            "https://u@x/",
            "https://x/a b",
            "x",
        ] {
            assert!(
                matches!(Target::parse(u), Err(UrlError::Invalid { .. })),
                "{u}"
            );
        }
    }

    #[test]
    fn resolves_by_family() {
        let t = Target::parse("https://127.0.0.1:5/").unwrap();
        assert_eq!(
            t.resolve("0.0.0.0:0".parse().unwrap()).unwrap(),
            "127.0.0.1:5".parse().unwrap()
        );
        assert!(matches!(
            t.resolve("[::]:0".parse().unwrap()),
            Err(UrlError::Resolve { .. })
        ));
    }
}
