//! A server that runs until Ctrl-C or SIGTERM, then drains its sessions and exits 0.
//!
//! ```text
//! cargo run -p tern-app --features tokio --example run_server -- 127.0.0.1:4433 127.0.0.1:9090
//! curl http://127.0.0.1:9090/metrics
//! ```
//!
//! Routes: `/echo` echoes bidirectional streams and datagrams; `/hold` stays open until the server
//! drains it, then closes with code 42. A self-signed certificate is made at start; its SHA-256 is
//! printed for clients to pin.

use std::net::SocketAddr;
use std::time::Duration;

use tern_app::{Request, ServerApp};
use tern_async::{Config, Session};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:4433").parse()?;
    let metrics: Option<SocketAddr> = args.next().map(|a| a.parse()).transpose()?;

    let cert = tern_app::generate_self_signed_cert(&["localhost", "127.0.0.1"])?;
    let hash: String = cert.sha256.iter().map(|b| format!("{b:02x}")).collect();
    println!("certificate sha256 {hash}");
    let config = Config::new().with_certificate_pem(cert.cert_pem.clone(), cert.key_pem.clone());

    let mut app = ServerApp::new()
        .route("/echo", |session: Session, _req: Request| async move {
            let d = session.clone();
            tokio::spawn(async move {
                while let Ok(data) = d.recv_datagram().await {
                    let _ = d.send_datagram(&data);
                }
            });
            while let Ok((mut send, mut recv)) = session.accept_bi().await {
                tokio::spawn(async move {
                    if let Ok(data) = recv.read_to_end(1 << 20).await {
                        let _ = send.write_all(&data).await;
                        let _ = send.finish();
                    }
                });
            }
        })
        .route("/hold", |session: Session, _req: Request| async move {
            session.draining().await;
            let _ = session.close(42, "drained");
        })
        .shutdown_grace(Duration::from_secs(5))
        .on_startup(move || async move { println!("serving on {addr}") });
    if let Some(m) = metrics {
        app = app.metrics_addr(m);
    }
    let report = app.run_tokio(addr, config).await?;
    println!(
        "stopped: {} sessions, {} rejected, {} closed at the deadline",
        report.accepted, report.rejected, report.force_closed
    );
    Ok(())
}
