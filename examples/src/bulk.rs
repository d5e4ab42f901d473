//! Bulk transfer over loopback with the tokio driver: one session, one bidirectional stream, N MiB each way
//! (client -> server, then the server sends the same amount back). Prints the throughput.
//!
//! Run: `cargo run --release -p tern-examples --bin bulk -- [MiB]` (default 256).

use std::time::Instant;

use tern_tokio::{Config, Endpoint};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let total = mib << 20;
    let cert = tern_tests::dev_cert();
    let server = Endpoint::server(
        "127.0.0.1:0".parse()?,
        Config::new().with_certificate_pem(cert.cert_pem, cert.key_pem),
    )?;
    let addr = server.local_addr();
    let srv = server.clone();
    tokio::spawn(async move {
        let Some(req) = srv.accept().await else {
            return;
        };
        let session = req.accept().expect("accept");
        let (mut send, mut recv) = session.accept_bi().await.expect("stream");
        let mut got = 0usize;
        while let Some(chunk) = recv.read_chunk(256 << 10).await.expect("read") {
            got += chunk.len();
        }
        assert_eq!(got, total);
        let block = bytes::Bytes::from(vec![7u8; 1 << 20]);
        for _ in 0..total >> 20 {
            send.write_chunk(block.clone()).await.expect("write");
        }
        send.finish().expect("finish");
        session.closed().await;
    });
    let client = Endpoint::client(Config::new().with_certificate_hashes(vec![cert.sha256]))?;
    let session = client.connect(&format!("https://{addr}/bulk")).await?;
    let (mut send, mut recv) = session.open_bi().await?;
    let block = bytes::Bytes::from(vec![1u8; 1 << 20]);
    let t = Instant::now();
    for _ in 0..mib {
        send.write_chunk(block.clone()).await?;
    }
    send.finish()?;
    let mut got = 0usize;
    let mut first = None;
    while let Some(chunk) = recv.read_chunk(256 << 10).await? {
        first.get_or_insert_with(Instant::now);
        got += chunk.len();
    }
    let up = first.map(|f| f - t).unwrap_or_default();
    let down = first.map(|f| f.elapsed()).unwrap_or_default();
    assert_eq!(got, total);
    let gbit = |d: std::time::Duration| (total * 8) as f64 / d.as_secs_f64() / 1e9;
    println!(
        "{mib} MiB client->server in {:.2} s ({:.2} Gbit/s, includes the server's first reply byte); \
         server->client in {:.2} s ({:.2} Gbit/s)",
        up.as_secs_f64(),
        gbit(up),
        down.as_secs_f64(),
        gbit(down)
    );
    let stats = session.connection_stats();
    println!(
        "client connection: {} packets sent, {} received, {} lost, rtt {:?}",
        stats.packets_sent, stats.packets_received, stats.packets_lost, stats.rtt
    );
    session.close(0, "done")?;
    client.wait_idle().await;
    Ok(())
}
