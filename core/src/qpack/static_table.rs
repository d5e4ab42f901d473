//! The QPACK static table (RFC 9204 section 3.1 and Appendix A).

/// The 99 entries of the QPACK static table, indexed from 0 (RFC 9204
/// Appendix A). Each entry is `(name, value)`.
pub const STATIC_TABLE: [(&[u8], &[u8]); 99] = [
    (b":authority", b""),                                    // 0
    (b":path", b"/"),                                        // 1
    (b"age", b"0"),                                          // 2
    (b"content-disposition", b""),                           // 3
    (b"content-length", b"0"),                               // 4
    (b"cookie", b""),                                        // 5
    (b"date", b""),                                          // 6
    (b"etag", b""),                                          // 7
    (b"if-modified-since", b""),                             // 8
    (b"if-none-match", b""),                                 // 9
    (b"last-modified", b""),                                 // 10
    (b"link", b""),                                          // 11
    (b"location", b""),                                      // 12
    (b"referer", b""),                                       // 13
    (b"set-cookie", b""),                                    // 14
    (b":method", b"CONNECT"),                                // 15
    (b":method", b"DELETE"),                                 // 16
    (b":method", b"GET"),                                    // 17
    (b":method", b"HEAD"),                                   // 18
    (b":method", b"OPTIONS"),                                // 19
    (b":method", b"POST"),                                   // 20
    (b":method", b"PUT"),                                    // 21
    (b":scheme", b"http"),                                   // 22
    (b":scheme", b"https"),                                  // 23
    (b":status", b"103"),                                    // 24
    (b":status", b"200"),                                    // 25
    (b":status", b"304"),                                    // 26
    (b":status", b"404"),                                    // 27
    (b":status", b"503"),                                    // 28
    (b"accept", b"*/*"),                                     // 29
    (b"accept", b"application/dns-message"),                 // 30
    (b"accept-encoding", b"gzip, deflate, br"),              // 31
    (b"accept-ranges", b"bytes"),                            // 32
    (b"access-control-allow-headers", b"cache-control"),     // 33
    (b"access-control-allow-headers", b"content-type"),      // 34
    (b"access-control-allow-origin", b"*"),                  // 35
    (b"cache-control", b"max-age=0"),                        // 36
    (b"cache-control", b"max-age=2592000"),                  // 37
    (b"cache-control", b"max-age=604800"),                   // 38
    (b"cache-control", b"no-cache"),                         // 39
    (b"cache-control", b"no-store"),                         // 40
    (b"cache-control", b"public, max-age=31536000"),         // 41
    (b"content-encoding", b"br"),                            // 42
    (b"content-encoding", b"gzip"),                          // 43
    (b"content-type", b"application/dns-message"),           // 44
    (b"content-type", b"application/javascript"),            // 45
    (b"content-type", b"application/json"),                  // 46
    (b"content-type", b"application/x-www-form-urlencoded"), // 47
    (b"content-type", b"image/gif"),                         // 48
    (b"content-type", b"image/jpeg"),                        // 49
    (b"content-type", b"image/png"),                         // 50
    (b"content-type", b"text/css"),                          // 51
    (b"content-type", b"text/html; charset=utf-8"),          // 52
    (b"content-type", b"text/plain"),                        // 53
    (b"content-type", b"text/plain;charset=utf-8"),          // 54
    (b"range", b"bytes=0-"),                                 // 55
    (b"strict-transport-security", b"max-age=31536000"),     // 56
    (
        b"strict-transport-security",
        b"max-age=31536000; includesubdomains",
    ), // 57
    (
        b"strict-transport-security",
        b"max-age=31536000; includesubdomains; preload",
    ), // 58
    (b"vary", b"accept-encoding"),                           // 59
    (b"vary", b"origin"),                                    // 60
    (b"x-content-type-options", b"nosniff"),                 // 61
    (b"x-xss-protection", b"1; mode=block"),                 // 62
    (b":status", b"100"),                                    // 63
    (b":status", b"204"),                                    // 64
    (b":status", b"206"),                                    // 65
    (b":status", b"302"),                                    // 66
    (b":status", b"400"),                                    // 67
    (b":status", b"403"),                                    // 68
    (b":status", b"421"),                                    // 69
    (b":status", b"425"),                                    // 70
    (b":status", b"500"),                                    // 71
    (b"accept-language", b""),                               // 72
    (b"access-control-allow-credentials", b"FALSE"),         // 73
    (b"access-control-allow-credentials", b"TRUE"),          // 74
    (b"access-control-allow-headers", b"*"),                 // 75
    (b"access-control-allow-methods", b"get"),               // 76
    (b"access-control-allow-methods", b"get, post, options"), // 77
    (b"access-control-allow-methods", b"options"),           // 78
    (b"access-control-expose-headers", b"content-length"),   // 79
    (b"access-control-request-headers", b"content-type"),    // 80
    (b"access-control-request-method", b"get"),              // 81
    (b"access-control-request-method", b"post"),             // 82
    (b"alt-svc", b"clear"),                                  // 83
    (b"authorization", b""),                                 // 84
    (
        b"content-security-policy",
        b"script-src 'none'; object-src 'none'; base-uri 'none'",
    ), // 85
    (b"early-data", b"1"),                                   // 86
    (b"expect-ct", b""),                                     // 87
    (b"forwarded", b""),                                     // 88
    (b"if-range", b""),                                      // 89
    (b"origin", b""),                                        // 90
    (b"purpose", b"prefetch"),                               // 91
    (b"server", b""),                                        // 92
    (b"timing-allow-origin", b"*"),                          // 93
    (b"upgrade-insecure-requests", b"1"),                    // 94
    (b"user-agent", b""),                                    // 95
    (b"x-forwarded-for", b""),                               // 96
    (b"x-frame-options", b"deny"),                           // 97
    (b"x-frame-options", b"sameorigin"),                     // 98
];

/// Looks up a field in the static table: `Some((index, true))` for an exact
/// name and value match, else `Some((index, false))` for the first entry with
/// the same name, else `None` (RFC 9204 section 4.5.2 and 4.5.4).
pub fn find(name: &[u8], value: &[u8]) -> Option<(usize, bool)> {
    let mut name_match = None;
    for (i, &(n, v)) in STATIC_TABLE.iter().enumerate() {
        if n == name {
            if v == value {
                return Some((i, true));
            }
            if name_match.is_none() {
                name_match = Some((i, false));
            }
        }
    }
    name_match
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spot checks against RFC 9204 Appendix A (index, name, value).
    #[test]
    fn rfc9204_appendix_a_entries() {
        let expected: &[(usize, &str, &str)] = &[
            (0, ":authority", ""),
            (1, ":path", "/"),
            (2, "age", "0"),
            (3, "content-disposition", ""),
            (4, "content-length", "0"),
            (5, "cookie", ""),
            (6, "date", ""),
            (7, "etag", ""),
            (8, "if-modified-since", ""),
            (9, "if-none-match", ""),
            (10, "last-modified", ""),
            (11, "link", ""),
            (12, "location", ""),
            (13, "referer", ""),
            (14, "set-cookie", ""),
            (15, ":method", "CONNECT"),
            (17, ":method", "GET"),
            (21, ":method", "PUT"),
            (22, ":scheme", "http"),
            (23, ":scheme", "https"),
            (24, ":status", "103"),
            (25, ":status", "200"),
            (26, ":status", "304"),
            (27, ":status", "404"),
            (28, ":status", "503"),
            (29, "accept", "*/*"),
            (30, "accept", "application/dns-message"),
            (31, "accept-encoding", "gzip, deflate, br"),
            (32, "accept-ranges", "bytes"),
            (35, "access-control-allow-origin", "*"),
            (41, "cache-control", "public, max-age=31536000"),
            (43, "content-encoding", "gzip"),
            (44, "content-type", "application/dns-message"),
            (52, "content-type", "text/html; charset=utf-8"),
            (54, "content-type", "text/plain;charset=utf-8"),
            (55, "range", "bytes=0-"),
            (
                58,
                "strict-transport-security",
                "max-age=31536000; includesubdomains; preload",
            ),
            (60, "vary", "origin"),
            (62, "x-xss-protection", "1; mode=block"),
            (63, ":status", "100"),
            (66, ":status", "302"),
            (71, ":status", "500"),
            (72, "accept-language", ""),
            (73, "access-control-allow-credentials", "FALSE"),
            (74, "access-control-allow-credentials", "TRUE"),
            (75, "access-control-allow-headers", "*"),
            (77, "access-control-allow-methods", "get, post, options"),
            (82, "access-control-request-method", "post"),
            (83, "alt-svc", "clear"),
            (84, "authorization", ""),
            (
                85,
                "content-security-policy",
                "script-src 'none'; object-src 'none'; base-uri 'none'",
            ),
            (86, "early-data", "1"),
            (87, "expect-ct", ""),
            (88, "forwarded", ""),
            (89, "if-range", ""),
            (90, "origin", ""),
            (91, "purpose", "prefetch"),
            (92, "server", ""),
            (93, "timing-allow-origin", "*"),
            (94, "upgrade-insecure-requests", "1"),
            (95, "user-agent", ""),
            (96, "x-forwarded-for", ""),
            (97, "x-frame-options", "deny"),
            (98, "x-frame-options", "sameorigin"),
        ];
        for &(i, n, v) in expected {
            assert_eq!(STATIC_TABLE[i], (n.as_bytes(), v.as_bytes()), "index {i}");
        }
    }

    #[test]
    fn entries_are_unique_and_lowercase() {
        for (i, &(n, v)) in STATIC_TABLE.iter().enumerate() {
            assert_eq!(find(n, v), Some((i, true)), "index {i}");
            assert!(!n.iter().any(u8::is_ascii_uppercase), "index {i}");
        }
    }

    #[test]
    fn find_prefers_exact_then_first_name() {
        assert_eq!(find(b":method", b"GET"), Some((17, true)));
        assert_eq!(find(b":method", b"PATCH"), Some((15, false)));
        assert_eq!(find(b":status", b"429"), Some((24, false)));
        assert_eq!(
            find(b"access-control-allow-headers", b"*"),
            Some((75, true))
        );
        assert_eq!(find(b"retry-after", b"5"), None);
        assert_eq!(find(b":protocol", b"webtransport"), None);
    }
}
