//! `tern serve --web`: the page a person (or a browser test) uses to talk to the server, over plain HTTP
//! on loopback (a secure context for browsers, so WebTransport is available without a certificate for the
//! page itself).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PAGE: &str = include_str!("page.html");
/// The most request bytes read before answering.
const MAX_REQUEST: usize = 16 << 10;

/// The page with the server's URL and certificate hash filled in.
pub fn page(webtransport_url: &str, sha256_hex: &str) -> String {
    PAGE.replace("__TERN_URL__", webtransport_url)
        .replace("__TERN_HASH__", sha256_hex)
}

/// The URL browsers should use for the WebTransport server bound at `addr` (a wildcard becomes loopback).
pub fn webtransport_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    };
    format!("https://{ip}:{}/", addr.port())
}

/// Serves the page until the task is dropped.
pub async fn serve(listener: TcpListener, page: String) {
    let page: std::sync::Arc<str> = page.into();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let page = page.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &page).await {
                        log::debug!("web page request: {e}");
                    }
                });
            }
            Err(e) => {
                log::warn!("web page listener: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, page: &str) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_REQUEST {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
        }
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/" | "/index.html") => {
            respond(&mut stream, "200 OK", "text/html; charset=utf-8", page).await
        }
        ("GET", _) => respond(&mut stream, "404 Not Found", "text/plain", "not found\n").await,
        _ => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "GET only\n",
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_carries_url_and_hash() {
        let p = page("https://127.0.0.1:4433/", "ab".repeat(32).as_str());
        assert!(p.contains("url: \"https://127.0.0.1:4433/\""));
        assert!(p.contains(&"ab".repeat(32)));
        assert!(!p.contains("__TERN_"));
    }

    #[test]
    fn wildcard_addresses_become_loopback() {
        assert_eq!(
            webtransport_url("0.0.0.0:5".parse().unwrap()),
            "https://127.0.0.1:5/"
        );
        assert_eq!(
            webtransport_url("[::]:5".parse().unwrap()),
            "https://[::1]:5/"
        );
        assert_eq!(
            webtransport_url("[::1]:5".parse().unwrap()),
            "https://[::1]:5/"
        );
        assert_eq!(
            webtransport_url("10.0.0.2:5".parse().unwrap()),
            "https://10.0.0.2:5/"
        );
    }
}
