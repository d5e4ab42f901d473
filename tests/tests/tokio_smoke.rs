//! First light for the tokio driver over real loopback UDP.

use std::time::Duration;

use tern_tests::configs;
use tern_tokio::Endpoint;

#[tokio::test]
async fn echo_over_loopback() {
    let (server_cfg, client_cfg) = configs();
    let server = Endpoint::server("127.0.0.1:0".parse().unwrap(), server_cfg).unwrap();
    let addr = server.local_addr();
    let srv = server.clone();
    tokio::spawn(async move {
        while let Some(inc) = srv.accept().await {
            let s = inc.accept().unwrap();
            tokio::spawn(async move {
                let (mut send, mut recv) = s.accept_bi().await.unwrap();
                let data = recv.read_to_end(1 << 20).await.unwrap();
                send.write_all(&data).await.unwrap();
                send.finish().unwrap();
                let d = s.recv_datagram().await.unwrap();
                s.send_datagram(&d).unwrap();
                s.closed().await;
            });
        }
    });
    let client = Endpoint::client(client_cfg).unwrap();
    let session = tokio::time::timeout(
        Duration::from_secs(5),
        client.connect(&format!("https://127.0.0.1:{}/echo", addr.port())),
    )
    .await
    .unwrap()
    .unwrap();
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send.write_all(b"hello tern").await.unwrap();
    send.finish().unwrap();
    let back = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, b"hello tern");
    session.send_datagram(b"dgram").unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), session.recv_datagram())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&d[..], b"dgram");
    session.close(7, "done").unwrap();
}
