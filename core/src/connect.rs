//! Extended CONNECT (RFC 9220, draft-ietf-webtrans-http3 section 3): building and checking the request and
//! response header sections of a WebTransport session.

use crate::error::SessionError;
use crate::event::{Headers, SessionRequest};
use crate::qpack::Field;
use crate::settings::Dialect;

/// `:protocol` of draft-02..14.
pub(crate) const PROTOCOL_DRAFT02: &str = "webtransport";
/// `:protocol` of draft-15 and later.
pub(crate) const PROTOCOL_LATEST: &str = "webtransport-h3";
/// The draft-02 request header browsers send.
pub(crate) const DRAFT02_REQUEST_HEADER: &str = "sec-webtransport-http3-draft02";
/// The draft-02 response header servers send back.
pub(crate) const DRAFT02_RESPONSE_HEADER: &str = "sec-webtransport-http3-draft";

/// Fields that are connection-specific and make a message malformed in HTTP/3 (RFC 9114 section 4.2).
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Checks an application-supplied field before it goes on the wire.
fn check_user_field(name: &str, value: &str) -> Result<(), SessionError> {
    let bad_name = name.is_empty()
        || name.starts_with(':')
        || name
            .bytes()
            .any(|b| b.is_ascii_uppercase() || b <= b' ' || b == 0x7f || b == b':')
        || CONNECTION_SPECIFIC.contains(&name);
    if bad_name {
        return Err(SessionError::InvalidHeader(format!("field name {name:?}")));
    }
    if value.bytes().any(|b| b == 0 || b == b'\r' || b == b'\n') {
        return Err(SessionError::InvalidHeader(format!("value of {name:?}")));
    }
    Ok(())
}

/// Size of a field section per RFC 9114 section 4.2.2.
pub(crate) fn section_size(fields: &[Field]) -> u64 {
    fields
        .iter()
        .map(|f| (f.name.len() + f.value.len() + 32) as u64)
        .sum()
}

/// The CONNECT request for a session in the dialect the server's SETTINGS called for.
pub(crate) fn request_fields(
    req: &SessionRequest,
    dialect: Dialect,
) -> Result<Vec<Field>, SessionError> {
    if req.authority.is_empty() || req.authority.bytes().any(|b| b <= b' ' || b == b'/') {
        return Err(SessionError::InvalidRequest(format!(
            "authority {:?}",
            req.authority
        )));
    }
    if !req.path.starts_with('/') || req.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(SessionError::InvalidRequest(format!("path {:?}", req.path)));
    }
    let protocol = match dialect {
        Dialect::Draft02 => PROTOCOL_DRAFT02,
        Dialect::Latest => PROTOCOL_LATEST,
    };
    let mut f = vec![
        Field::new(":method", "CONNECT"),
        Field::new(":protocol", protocol),
        Field::new(":scheme", "https"),
        Field::new(":authority", req.authority.as_str()),
        Field::new(":path", req.path.as_str()),
    ];
    if dialect == Dialect::Draft02 {
        f.push(Field::new(DRAFT02_REQUEST_HEADER, "1"));
    }
    if let Some(o) = &req.origin {
        check_user_field("origin", o)?;
        f.push(Field::new("origin", o.as_str()));
    }
    for (n, v) in req.headers.iter() {
        check_user_field(n, v)?;
        f.push(Field::new(n, v));
    }
    Ok(f)
}

/// A response header section: `:status` then the draft-02 answer header when the client used draft-02.
pub(crate) fn response_fields(
    status: u16,
    dialect: Dialect,
    headers: &Headers,
) -> Result<Vec<Field>, SessionError> {
    let mut f = vec![Field::new(":status", status.to_string())];
    if dialect == Dialect::Draft02 && (200..300).contains(&status) {
        f.push(Field::new(DRAFT02_RESPONSE_HEADER, "draft02"));
    }
    for (n, v) in headers.iter() {
        check_user_field(n, v)?;
        f.push(Field::new(n, v));
    }
    Ok(f)
}

/// The outcome of checking a received request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RequestCheck {
    /// A well-formed WebTransport CONNECT.
    WebTransport {
        request: SessionRequest,
        protocol: String,
        dialect: Dialect,
    },
    /// Well-formed, but not something this server serves: answer with this status.
    Refuse(u16, &'static str),
    /// Malformed (RFC 9114 section 4.1.2): reset the stream with H3_MESSAGE_ERROR.
    Malformed(String),
}

/// Splits pseudo-headers from regular fields and checks the rules every HTTP/3 message keeps
/// (RFC 9114 section 4.3): pseudo-headers first, each at most once, no unknown ones, lowercase names, no
/// connection-specific fields.
fn split_fields(
    fields: Vec<Field>,
    allowed_pseudo: &[&str],
) -> Result<(Vec<(String, String)>, Headers), String> {
    let mut pseudo: Vec<(String, String)> = Vec::new();
    let mut headers = Headers::new();
    for f in fields {
        let name = String::from_utf8(f.name).map_err(|_| "field name is not UTF-8".to_string())?;
        let value = String::from_utf8_lossy(&f.value).into_owned();
        if name.is_empty() {
            return Err("empty field name".into());
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("uppercase field name {name:?}"));
        }
        if let Some(p) = name.strip_prefix(':') {
            if !headers.is_empty() {
                return Err(format!("pseudo-header :{p} after regular fields"));
            }
            if !allowed_pseudo.contains(&name.as_str()) {
                return Err(format!("unknown pseudo-header {name}"));
            }
            if pseudo.iter().any(|(n, _)| *n == name) {
                return Err(format!("duplicate {name}"));
            }
            pseudo.push((name, value));
        } else {
            if CONNECTION_SPECIFIC.contains(&name.as_str()) || (name == "te" && value != "trailers")
            {
                return Err(format!("connection-specific field {name}"));
            }
            headers.0.push((name, value));
        }
    }
    Ok((pseudo, headers))
}

fn pseudo<'a>(p: &'a [(String, String)], name: &str) -> Option<&'a str> {
    p.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Checks a request a server received on a new request stream.
pub(crate) fn check_request(fields: Vec<Field>) -> RequestCheck {
    let allowed = [":method", ":scheme", ":authority", ":path", ":protocol"];
    let (p, mut headers) = match split_fields(fields, &allowed) {
        Ok(v) => v,
        Err(e) => return RequestCheck::Malformed(e),
    };
    let Some(method) = pseudo(&p, ":method") else {
        return RequestCheck::Malformed("missing :method".into());
    };
    if method != "CONNECT" {
        // Only extended CONNECT is served; any other request is well-formed but not handled here.
        return RequestCheck::Refuse(405, "only extended CONNECT is served");
    }
    let Some(protocol) = pseudo(&p, ":protocol") else {
        // Plain CONNECT (RFC 9114 section 4.4): a proxy request, which this server is not.
        return RequestCheck::Refuse(400, "CONNECT without :protocol");
    };
    // RFC 9220 section 3 / RFC 8441 section 4: an extended CONNECT carries :scheme, :path and :authority.
    for required in [":scheme", ":authority", ":path"] {
        match pseudo(&p, required) {
            None => return RequestCheck::Malformed(format!("missing {required}")),
            Some("") => return RequestCheck::Malformed(format!("empty {required}")),
            Some(_) => {}
        }
    }
    let dialect = match protocol {
        PROTOCOL_LATEST => Dialect::Latest,
        PROTOCOL_DRAFT02 => Dialect::Draft02,
        _ => return RequestCheck::Refuse(501, "unsupported :protocol"),
    };
    let origin = headers.get("origin").map(str::to_string);
    headers.0.retain(|(n, _)| n != "origin");
    RequestCheck::WebTransport {
        request: SessionRequest {
            authority: pseudo(&p, ":authority").unwrap_or_default().to_string(),
            path: pseudo(&p, ":path").unwrap_or_default().to_string(),
            origin,
            headers,
        },
        protocol: protocol.to_string(),
        dialect,
    }
}

/// Checks a response a client received: the status and the other fields, or why it is malformed.
pub(crate) fn check_response(fields: Vec<Field>) -> Result<(u16, Headers), String> {
    let (p, headers) = split_fields(fields, &[":status"])?;
    let status = pseudo(&p, ":status").ok_or("missing :status")?;
    if status.len() != 3 {
        return Err(format!("bad :status {status:?}"));
    }
    let status: u16 = status
        .parse()
        .map_err(|_| format!("bad :status {status:?}"))?;
    if !(100..=599).contains(&status) {
        return Err(format!("bad :status {status}"));
    }
    Ok((status, headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(list: &[(&str, &str)]) -> Vec<Field> {
        list.iter().map(|(n, v)| Field::new(*n, *v)).collect()
    }

    #[test]
    fn chromium_style_request_is_accepted() {
        let got = check_request(fields(&[
            (":method", "CONNECT"),
            (":protocol", "webtransport"),
            (":scheme", "https"),
            (":authority", "localhost:4433"),
            (":path", "/echo"),
            ("sec-webtransport-http3-draft02", "1"),
            ("origin", "https://example.com"),
        ]));
        let RequestCheck::WebTransport {
            request, dialect, ..
        } = got
        else {
            panic!("not accepted: {got:?}")
        };
        assert_eq!(dialect, Dialect::Draft02);
        assert_eq!(request.path, "/echo");
        assert_eq!(request.origin.as_deref(), Some("https://example.com"));
        assert_eq!(
            request.headers.get("sec-webtransport-http3-draft02"),
            Some("1")
        );
    }

    #[test]
    fn malformed_and_refused_requests() {
        let base = [
            (":method", "CONNECT"),
            (":protocol", "webtransport-h3"),
            (":scheme", "https"),
            (":authority", "a"),
        ];
        assert!(
            matches!(check_request(fields(&base)), RequestCheck::Malformed(m) if m.contains(":path"))
        );
        let mut unknown = base.to_vec();
        unknown[1] = (":protocol", "websocket");
        unknown.push((":path", "/"));
        assert_eq!(
            check_request(fields(&unknown)),
            RequestCheck::Refuse(501, "unsupported :protocol")
        );
        let mut late = base.to_vec();
        late.push(("x", "1"));
        late.push((":path", "/"));
        assert!(matches!(
            check_request(fields(&late)),
            RequestCheck::Malformed(_)
        ));
        let mut upper = base.to_vec();
        upper.push((":path", "/"));
        upper.push(("X-Upper", "1"));
        assert!(matches!(
            check_request(fields(&upper)),
            RequestCheck::Malformed(_)
        ));
    }

    #[test]
    fn response_status_is_checked() {
        assert_eq!(
            check_response(fields(&[(":status", "200")])).unwrap().0,
            200
        );
        assert!(check_response(fields(&[("x", "1")])).is_err());
        assert!(check_response(fields(&[(":status", "2000")])).is_err());
    }

    #[test]
    fn user_fields_are_checked() {
        let req = SessionRequest::new("h:1", "/").with_header("Bad Name", "v");
        // Headers lowercases names, but a space stays invalid.
        assert!(request_fields(&req, Dialect::Latest).is_err());
        let req = SessionRequest::new("h:1", "/").with_header("x-ok", "line\r\nbreak");
        assert!(request_fields(&req, Dialect::Latest).is_err());
        let req = SessionRequest::new("h:1", "/").with_header("connection", "close");
        assert!(request_fields(&req, Dialect::Latest).is_err());
    }
}
