//! The async-io driver (`tern-async-std`) over real loopback UDP: under async-std, under smol (with smol's
//! own spawner, no async-std executor involved), and against the tokio driver in both directions.

use std::future::Future;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use tern_async::{Config, Endpoint, SessionCloseReason};
use tern_async_std::AsyncIoRuntime;

const LIMIT: Duration = Duration::from_secs(10);

/// Runs `f` but fails the test after `LIMIT`.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    futures_lite::future::or(async { Some(f.await) }, async {
        async_io::Timer::after(LIMIT).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("timed out: {what}"))
}

fn configs() -> (Config, Config) {
    let cert = tern_tests::dev_cert();
    (
        Config::new().with_certificate_pem(cert.cert_pem, cert.key_pem),
        Config::new().with_certificate_hashes(vec![cert.sha256]),
    )
}

/// An echo server for one session: datagrams, bidi streams (echoed, finished) and one uni stream (echoed on
/// a new uni stream); returns how the peer closed.
async fn serve_one(server: Endpoint) -> SessionCloseReason {
    let req = within("accept", server.accept()).await.expect("a request");
    assert_eq!(req.path(), "/echo");
    let s = req.accept().expect("accept");
    let d = within("datagram", s.recv_datagram())
        .await
        .expect("datagram");
    s.send_datagram(&d).expect("echo datagram");
    let (mut send, mut recv) = within("bidi", s.accept_bi()).await.expect("bidi");
    let mut data = Vec::new();
    within("read bidi", AsyncReadExt::read_to_end(&mut recv, &mut data))
        .await
        .expect("read");
    within("write bidi", send.write_all(&data))
        .await
        .expect("write");
    send.close().await.expect("finish");
    let mut uni = within("uni", s.accept_uni()).await.expect("uni");
    let data = within("read uni", uni.read_to_end(1 << 20))
        .await
        .expect("read uni");
    let mut back = within("open uni", s.open_uni()).await.expect("open uni");
    within("write uni", back.write_all(&data))
        .await
        .expect("write uni");
    back.finish().expect("finish uni");
    within("closed", s.closed()).await
}

/// The client side of `serve_one`; closes with 7 "done".
async fn client_run(client: Endpoint, port: u16) {
    let s = within(
        "connect",
        client.connect(&format!("https://127.0.0.1:{port}/echo")),
    )
    .await
    .expect("connect");
    s.send_datagram(b"ping").expect("send datagram");
    let d = within("datagram echo", s.recv_datagram())
        .await
        .expect("datagram");
    assert_eq!(&d[..], b"ping");
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + 3) as u8).collect();
    let (mut send, mut recv) = within("open bi", s.open_bi()).await.expect("bi");
    within("write", send.write_all(&payload))
        .await
        .expect("write");
    send.finish().expect("finish");
    let mut back = Vec::new();
    within("read echo", AsyncReadExt::read_to_end(&mut recv, &mut back))
        .await
        .expect("read");
    assert_eq!(back, payload);
    let mut uni = within("open uni", s.open_uni()).await.expect("uni");
    within("write uni", uni.write_all(b"uni bytes"))
        .await
        .expect("write uni");
    uni.finish().expect("finish uni");
    let mut echo = within("accept uni", s.accept_uni())
        .await
        .expect("uni back");
    assert_eq!(
        within("read uni", echo.read_to_end(1024)).await.unwrap(),
        b"uni bytes"
    );
    s.close(7, "done").expect("close");
    within("client idle", async {
        drop(s);
        client.wait_idle().await
    })
    .await;
}

fn assert_closed_with_done(r: SessionCloseReason) {
    assert_eq!((r.code(), r.reason()), (Some(7), Some("done")), "{r:?}");
}

#[test]
fn async_std_both_ends() {
    async_std::task::block_on(async {
        let (sc, cc) = configs();
        let server = tern_async_std::Endpoint::server("127.0.0.1:0".parse().unwrap(), sc).unwrap();
        let port = server.local_addr().port();
        let srv = async_std::task::spawn(serve_one(server.into_inner()));
        let client = tern_async_std::Endpoint::client(cc).unwrap();
        client_run(client.into_inner(), port).await;
        assert_closed_with_done(srv.await);
    });
}

#[test]
fn smol_both_ends_without_async_std_executor() {
    let rt = || AsyncIoRuntime::with_spawner(|f| smol::spawn(f).detach());
    smol::block_on(async {
        let (sc, cc) = configs();
        let server =
            tern_async_std::Endpoint::bind_with(rt(), "127.0.0.1:0".parse().unwrap(), sc).unwrap();
        let port = server.local_addr().port();
        let srv = smol::spawn(serve_one(server.into_inner()));
        let client =
            tern_async_std::Endpoint::bind_with(rt(), "127.0.0.1:0".parse().unwrap(), cc).unwrap();
        client_run(client.into_inner(), port).await;
        assert_closed_with_done(srv.await);
    });
}

#[test]
fn tokio_client_async_std_server_and_back() {
    // async-std server, tokio client.
    let (sc, cc) = configs();
    let server = tern_async_std::Endpoint::server("127.0.0.1:0".parse().unwrap(), sc).unwrap();
    let port = server.local_addr().port();
    let srv = async_std::task::spawn(serve_one(server.into_inner()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = tern_tokio::Endpoint::client(cc).unwrap();
        client_run(client.into_inner(), port).await;
    });
    assert_closed_with_done(async_std::task::block_on(srv));

    // tokio server, async-std client.
    let (sc, cc) = configs();
    let (port, srv) = rt.block_on(async {
        let server = tern_tokio::Endpoint::server("127.0.0.1:0".parse().unwrap(), sc).unwrap();
        (
            server.local_addr().port(),
            tokio::spawn(serve_one(server.into_inner())),
        )
    });
    async_std::task::block_on(async {
        let client = tern_async_std::Endpoint::client(cc).unwrap();
        client_run(client.into_inner(), port).await;
    });
    assert_closed_with_done(rt.block_on(srv).unwrap());
}
