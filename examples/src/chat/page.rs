//! The browser page: plain HTTP (`tiny_http`) serving one HTML file at `/` that opens a WebTransport
//! session to the chat server, pinned by the certificate's SHA-256 (`serverCertificateHashes`), so a
//! development certificate works without installing it. Browsers treat `http://127.0.0.1` and
//! `http://localhost` as secure contexts, where WebTransport is available.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;

const PAGE: &str = include_str!("page.html");

/// The page for a server at `url` whose certificate has SHA-256 `hash_hex`.
pub fn render(url: &str, hash_hex: &str) -> String {
    let config = serde_json::json!({ "url": url, "hash": hash_hex }).to_string();
    // Inside <script>: no "</script>" can come from a value.
    PAGE.replace("__CHAT_CONFIG__", &config.replace('<', "\\u003c"))
}

/// The page's HTTP server (a thread); stopped on drop.
pub struct PageServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl PageServer {
    /// Serves the page on `addr` for the chat server listening on `chat` with certificate `hash_hex`.
    /// When `chat`'s address is unspecified (`0.0.0.0`), the page names the host the browser asked for.
    pub fn start(addr: SocketAddr, chat: SocketAddr, hash_hex: String) -> std::io::Result<Self> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| std::io::Error::other(format!("HTTP on {addr}: {e}")))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("HTTP server has no IP address"))?;
        let server = Arc::new(server);
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("chat-page".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let host = request
                        .headers()
                        .iter()
                        .find(|h| h.field.equiv("host"))
                        .map(|h| h.value.as_str().to_string());
                    let response = match request.url() {
                        "/" | "/index.html" => {
                            let url = chat_url(chat, host.as_deref());
                            let html = render(&url, &hash_hex);
                            tiny_http::Response::from_string(html).with_header(
                                "Content-Type: text/html; charset=utf-8"
                                    .parse::<tiny_http::Header>()
                                    .expect("valid header"),
                            )
                        }
                        _ => tiny_http::Response::from_string("not found\n").with_status_code(404),
                    };
                    if let Err(e) = request.respond(response) {
                        log::debug!("chat page: {e}");
                    }
                }
            })?;
        Ok(PageServer {
            server,
            addr,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The WebTransport URL the page connects to.
fn chat_url(chat: SocketAddr, host_header: Option<&str>) -> String {
    if !chat.ip().is_unspecified() {
        return format!("https://{chat}/");
    }
    let host = host_header
        .and_then(|h| {
            // "name:port", "[v6]:port", or a bare name.
            if let Some(rest) = h.strip_prefix('[') {
                rest.split_once(']').map(|(ip, _)| format!("[{ip}]"))
            } else {
                h.split(':').next().map(str::to_string)
            }
        })
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
        })
        .unwrap_or_else(|| match chat.ip() {
            IpAddr::V4(_) => "127.0.0.1".into(),
            IpAddr::V6(_) => "[::1]".into(),
        });
    format!("https://{host}:{}/", chat.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_names_the_listening_or_asked_host() {
        let fixed: SocketAddr = "127.0.0.1:4433".parse().unwrap();
        assert_eq!(chat_url(fixed, Some("evil")), "https://127.0.0.1:4433/");
        let any: SocketAddr = "0.0.0.0:4433".parse().unwrap();
        assert_eq!(
            chat_url(any, Some("chat.example:8080")),
            "https://chat.example:4433/"
        );
        assert_eq!(chat_url(any, Some("[::1]:8080")), "https://[::1]:4433/");
        assert_eq!(chat_url(any, Some("a\"<b")), "https://127.0.0.1:4433/");
        assert_eq!(chat_url(any, None), "https://127.0.0.1:4433/");
    }

    #[test]
    fn render_fills_the_config() {
        let page = render("https://127.0.0.1:1/", "ab");
        assert!(page.contains(r#""url":"https://127.0.0.1:1/""#));
        assert!(page.contains(r#""hash":"ab""#));
        assert!(!page.contains("__CHAT_CONFIG__"));
    }
}
