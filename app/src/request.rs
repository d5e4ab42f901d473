//! The request a handler and middleware see, and the router that matches paths to handlers.

use std::collections::HashMap;
use std::net::SocketAddr;

use tern_async::Headers;

/// What the client asked for: path (without the query), route parameters, query, headers, origin and
/// address. Cheap enough to clone once per session.
#[derive(Clone, Debug)]
pub struct Request {
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) route: String,
    pub(crate) params: HashMap<String, String>,
    pub(crate) headers: Headers,
    pub(crate) origin: Option<String>,
    pub(crate) authority: String,
    pub(crate) remote: SocketAddr,
}

impl Request {
    /// Builds a request by hand (for testing middleware and handlers without a network).
    pub fn new(path_and_query: &str, remote: SocketAddr) -> Self {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        Self {
            path: path.to_string(),
            query: query.to_string(),
            route: String::new(),
            params: HashMap::new(),
            headers: Headers::new(),
            origin: None,
            authority: String::new(),
            remote,
        }
    }
    /// Adds a request header (builder, for tests).
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(name, value);
        self
    }
    /// Sets `origin` (builder, for tests).
    #[must_use]
    pub fn with_origin(mut self, origin: &str) -> Self {
        self.origin = Some(origin.to_string());
        self
    }

    /// The path, without the query (`/rooms/7`).
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The raw query string after `?` (empty when there is none).
    pub fn query(&self) -> &str {
        &self.query
    }
    /// The first value of a query parameter, percent-decoded (`+` is a space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k, true) == name).then(|| percent_decode(v, true))
        })
    }
    /// The route pattern that matched (`/rooms/{id}`).
    pub fn route(&self) -> &str {
        &self.route
    }
    /// A route parameter (`id` in `/rooms/{id}`), percent-decoded.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
    /// All route parameters.
    pub fn params(&self) -> &HashMap<String, String> {
        &self.params
    }
    /// The request's header fields (besides the pseudo-headers and `origin`).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }
    /// The first value of a header field.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
    /// `origin`, when the client sent one (browsers always do).
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }
    /// `:authority` (host and port the client used).
    pub fn authority(&self) -> &str {
        &self.authority
    }
    /// The client's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.remote
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set); invalid escapes stay as they are.
pub(crate) fn percent_decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A parsed route pattern: `/chat`, `/rooms/{id}`, `/rooms/{id}/members/{member}`: what
/// [`ServerApp::route`](crate::ServerApp::route) matches session paths with, public for applications that
/// route their own messages the same way (the HTTP-like example routes requests inside a session).
///
/// ```
/// let p = tern_app::RoutePattern::parse("/api/items/{id}").unwrap();
/// assert_eq!(p.matches("/api/items/7").unwrap()["id"], "7");
/// assert!(p.matches("/api/items").is_none());
/// assert!(tern_app::RoutePattern::parse("items").is_err());
/// ```
#[derive(Clone, Debug)]
pub struct RoutePattern {
    text: String,
    segments: Vec<Segment>,
}

/// Why a route pattern is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid route pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern given.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl RoutePattern {
    /// Parses a pattern: it starts with `/`; a segment `{name}` is a parameter.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let err = |reason| PatternError {
            pattern: text.to_string(),
            reason,
        };
        if !text.starts_with('/') {
            return Err(err("a pattern starts with '/'"));
        }
        let mut segments = Vec::new();
        let mut names = Vec::new();
        for seg in text[1..].split('/') {
            if let Some(inner) = seg.strip_prefix('{') {
                let name = inner
                    .strip_suffix('}')
                    .ok_or_else(|| err("a '{' without its '}'"))?;
                if name.is_empty() || name.contains(['{', '}']) {
                    return Err(err("a parameter needs a name: {name}"));
                }
                if names.contains(&name) {
                    return Err(err("a parameter name appears twice"));
                }
                names.push(name);
                segments.push(Segment::Param(name.to_string()));
            } else if seg.contains(['{', '}']) {
                return Err(err("a parameter takes a whole segment: /{name}/"));
            } else {
                segments.push(Segment::Literal(seg.to_string()));
            }
        }
        Ok(Self {
            text: text.to_string(),
            segments,
        })
    }

    /// The pattern as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub(crate) fn is_static(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// The parameters (percent-decoded) when `path` (without query) matches.
    pub fn matches(&self, path: &str) -> Option<HashMap<String, String>> {
        let rest = path.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = HashMap::new();
        for (seg, part) in self.segments.iter().zip(parts) {
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => {
                    params.insert(name.clone(), percent_decode(part, false));
                }
            }
        }
        Some(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_and_extract() {
        let p = RoutePattern::parse("/rooms/{id}/m/{who}").unwrap();
        let m = p.matches("/rooms/7/m/a%20b").unwrap();
        assert_eq!(m["id"], "7");
        assert_eq!(m["who"], "a b");
        assert!(p.matches("/rooms/7/m").is_none());
        assert!(p.matches("/rooms//m/x").is_none());
        assert!(RoutePattern::parse("/chat")
            .unwrap()
            .matches("/chat")
            .is_some());
        assert!(RoutePattern::parse("/chat")
            .unwrap()
            .matches("/chat/")
            .is_none());
        assert!(RoutePattern::parse("chat").is_err());
        assert!(RoutePattern::parse("/a/{x").is_err());
        assert!(RoutePattern::parse("/a/{x}/{x}").is_err());
        assert!(RoutePattern::parse("/a/x{y}").is_err());
    }

    #[test]
    fn query_and_decoding() {
        let r = Request::new("/p?a=1&b=x+y%21&bad=%zz%4", "127.0.0.1:1".parse().unwrap());
        assert_eq!(r.path(), "/p");
        assert_eq!(r.query_param("a").as_deref(), Some("1"));
        assert_eq!(r.query_param("b").as_deref(), Some("x y!"));
        assert_eq!(r.query_param("bad").as_deref(), Some("%zz%4"));
        assert_eq!(r.query_param("c"), None);
    }
}
