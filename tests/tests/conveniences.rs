//! The everyday stream and datagram conveniences of the async layer, over real loopback UDP. Every body runs
//! on tokio and on async-std (`<test>::tokio`, `<test>::async_std`): write-and-finish and read-all, JSON on
//! a stream and a datagram, `Session::incoming` in arrival order, length-prefixed messages and lines through
//! each I/O family's codec crate, `read_exact`, the read-all limit, and receives with a timeout.

use std::future::{poll_fn, Future};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tern_async::{
    futures_framing, tokio_framing, AsyncTimer, Config, Endpoint, IncomingStream, JsonError,
    ReadError, RecvStream, Runtime, SendStream, Session, SessionError, DEFAULT_MAX_LINE_LEN,
    DEFAULT_MAX_MESSAGE_LEN, DEFAULT_READ_ALL_LIMIT,
};

type Rt = Arc<dyn Runtime>;

/// The longest any single step may take before the test fails.
const STEP: Duration = Duration::from_secs(20);

fn on_tokio<F: Future<Output = ()>>(body: impl FnOnce(Rt) -> F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let runtime: Rt = Arc::new(tern_tokio::TokioRuntime::current().unwrap());
        body(runtime).await
    })
}

fn on_async_std<F: Future<Output = ()>>(body: impl FnOnce(Rt) -> F) {
    async_std::task::block_on(body(Arc::new(tern_async_std::AsyncIoRuntime::async_std())))
}

/// Two tests per body: `name::tokio` and `name::async_std`.
macro_rules! on_both_runtimes {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn tokio() {
                super::on_tokio($body)
            }
            #[test]
            fn async_std() {
                super::on_async_std($body)
            }
        }
    };
}

/// Sleeps on the runtime's own timer.
async fn sleep(rt: &Rt, d: Duration) {
    let mut timer = rt.new_timer(Instant::now() + d);
    poll_fn(|cx| AsyncTimer::poll(timer.as_mut(), cx)).await
}

/// Awaits `f` for at most [`STEP`].
async fn within<T>(rt: &Rt, what: &str, f: impl Future<Output = T>) -> T {
    futures_lite::future::or(async { Some(f.await) }, async {
        sleep(rt, STEP).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("timed out: {what}"))
}

/// A server and a client endpoint on loopback with one session between them.
struct Pair {
    _server: Endpoint,
    _client: Endpoint,
    /// The server's side of the session.
    server: Session,
    /// The client's side.
    client: Session,
}

async fn pair(rt: &Rt) -> Pair {
    let cert = tern_tests::dev_cert();
    let server = Endpoint::bind(
        rt.clone(),
        Config::new().with_certificate_pem(cert.cert_pem, cert.key_pem),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let client = Endpoint::bind(
        rt.clone(),
        Config::new().with_certificate_hashes(vec![cert.sha256]),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let url = format!("https://127.0.0.1:{}/echo", server.local_addr().port());
    let (s, c) = within(
        rt,
        "session",
        futures_lite::future::zip(
            async { server.accept().await.expect("request").accept().unwrap() },
            client.connect(&url),
        ),
    )
    .await;
    Pair {
        _server: server,
        _client: client,
        server: s,
        client: c.expect("connect"),
    }
}

/// Deterministic bytes for message `i`.
fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i * 31 + k * 7) as u8).collect()
}

// The seed's echo: the client writes a whole message and finishes in one call, the server reads it all and
// answers in one call, the client reads the whole answer.
on_both_runtimes!(echo_one_call_each_way, |rt| async move {
    let p = pair(&rt).await;
    let request = payload(1, 200_000);
    let server = async {
        let mut incoming = p.server.incoming();
        let Some(IncomingStream::Bi(mut send, mut recv)) = incoming.next().await else {
            panic!("expected a bidirectional stream");
        };
        let data = recv.read_all().await.expect("read_all");
        let mut reply = b"ECHO: ".to_vec();
        reply.extend_from_slice(&data);
        send.write_all_and_finish(&reply).await.expect("reply");
    };
    let client = async {
        let (mut send, mut recv) = p.client.open_bi().await.unwrap();
        send.write_all_and_finish(&request).await.expect("request");
        recv.read_all().await.expect("read reply")
    };
    let ((), reply) = within(&rt, "echo", futures_lite::future::zip(server, client)).await;
    assert_eq!(&reply[..6], b"ECHO: ");
    assert_eq!(&reply[6..], &request[..]);
    // Written and finished: a second write is refused.
    let (mut send, _recv) = p.client.open_bi().await.unwrap();
    send.write_all_and_finish(b"x").await.unwrap();
    assert!(send.write_all(b"more").await.is_err());
});

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u32,
    item: String,
    tags: Vec<String>,
    price: f64,
}

on_both_runtimes!(json_on_a_stream_and_a_datagram, |rt| async move {
    let p = pair(&rt).await;
    let order = Order {
        id: 42,
        item: "café ☕".into(),
        tags: vec!["hot".into(), "large".into()],
        price: 3.5,
    };

    // Stream: one JSON document each way.
    let server = async {
        let (mut send, mut recv) = p.server.accept_bi().await.unwrap();
        let mut got: Order = recv.read_json().await.expect("server read_json");
        got.id += 1;
        got.tags.push("served".into());
        send.send_json(&got).await.expect("server send_json");
    };
    let client = async {
        let (mut send, mut recv) = p.client.open_bi().await.unwrap();
        send.send_json(&order).await.expect("client send_json");
        recv.read_json::<Order>().await.expect("client read_json")
    };
    let ((), back) = within(
        &rt,
        "json stream",
        futures_lite::future::zip(server, client),
    )
    .await;
    let mut expected = order.clone();
    expected.id = 43;
    expected.tags.push("served".into());
    assert_eq!(back, expected);

    // A stream that is not JSON of the type: a decode error naming JSON.
    let (mut send, recv) = p.client.open_bi().await.unwrap();
    send.write_all_and_finish(br#"{"id": "not a number"}"#)
        .await
        .unwrap();
    let (_s, mut srecv) = within(&rt, "accept", p.server.accept_bi()).await.unwrap();
    let err = within(&rt, "bad json", srecv.read_json::<Order>())
        .await
        .unwrap_err();
    assert!(matches!(err, JsonError::Decode(_)), "{err:?}");
    assert!(err.to_string().starts_with("invalid JSON"), "{err}");
    drop(recv);

    // Datagrams: a bad one is reported and consumed, the good one after it arrives.
    p.client.send_datagram(b"not json").unwrap();
    p.client.send_json_datagram(&order).unwrap();
    let first = within(&rt, "bad datagram", p.server.recv_json_datagram::<Order>()).await;
    assert!(matches!(first, Err(JsonError::Decode(_))), "{first:?}");
    let got: Order = within(&rt, "datagram", p.server.recv_json_datagram())
        .await
        .expect("json datagram");
    assert_eq!(got, order);
    p.server
        .send_json_datagram(&serde_json::json!({"ok": true, "id": got.id}))
        .unwrap();
    let v: serde_json::Value = within(&rt, "datagram back", p.client.recv_json_datagram())
        .await
        .unwrap();
    assert_eq!(v, serde_json::json!({"ok": true, "id": 42}));
});

// Streams of both kinds queue up before the server looks; `incoming` hands them out in the order they
// arrived (neither all bidirectional first nor all unidirectional first), and ends with the session.
on_both_runtimes!(
    incoming_yields_both_kinds_in_arrival_order,
    |rt| async move {
        let p = pair(&rt).await;
        let kinds = [false, true, false, false, true, true, false];
        let mut keep = Vec::new();
        for (i, &bidi) in kinds.iter().enumerate() {
            if bidi {
                let (mut send, recv) = p.client.open_bi().await.unwrap();
                send.write_all_and_finish(&[i as u8]).await.unwrap();
                keep.push(recv);
            } else {
                let mut send = p.client.open_uni().await.unwrap();
                send.write_all_and_finish(&[i as u8]).await.unwrap();
            }
            // Wait until the server has seen this one, so the arrival order is the opening order.
            within(&rt, "arrival", async {
                loop {
                    let st = p.server.stats();
                    if st.peer_bidi_streams + st.peer_uni_streams == i as u64 + 1 {
                        break;
                    }
                    sleep(&rt, Duration::from_millis(2)).await;
                }
            })
            .await;
        }
        let mut incoming = p.server.incoming();
        for (i, &bidi) in kinds.iter().enumerate() {
            let s = within(&rt, "incoming", incoming.next())
                .await
                .expect("a stream");
            let (is_bidi, mut recv) = match s {
                IncomingStream::Bi(_send, recv) => (true, recv),
                IncomingStream::Uni(recv) => (false, recv),
            };
            assert_eq!(is_bidi, bidi, "stream {i}");
            assert_eq!(
                within(&rt, "label", recv.read_all()).await.unwrap(),
                [i as u8]
            );
        }
        // The session ends: so does the stream of streams.
        p.client.close(3, "bye").unwrap();
        assert!(within(&rt, "end", incoming.next()).await.is_none());
        let reason = p.server.close_reason().expect("closed");
        assert_eq!(
            reason.to_string(),
            "session closed by the peer with code 3: bye"
        );
        drop(keep);
    }
);

// Datagrams as a Stream, ending when the session ends.
on_both_runtimes!(datagrams_as_a_stream, |rt| async move {
    let p = pair(&rt).await;
    let mut datagrams = p.server.datagrams();
    for i in 0..5u8 {
        p.client.send_datagram([i; 10]).unwrap();
        let d = within(&rt, "datagram", datagrams.next()).await.unwrap();
        assert_eq!(&d[..], &[i; 10]);
    }
    p.client.close(0, "").unwrap();
    assert!(within(&rt, "end", datagrams.next()).await.is_none());
});

const MESSAGES: usize = 10_000;

fn message(i: usize) -> Bytes {
    Bytes::from(payload(i, (i * 37) % 700))
}

/// 10,000 length-prefixed messages of 0 to 699 bytes on one stream, echoed back on the same stream; every
/// message is checked both ways. Writers and readers come from the functions given, so both I/O families
/// (and the two mixed) are covered.
async fn messages_round_trip<CW, CR, SW, SR>(
    rt: Rt,
    client_writer: fn(SendStream) -> CW,
    client_reader: fn(RecvStream) -> CR,
    server_writer: fn(SendStream) -> SW,
    server_reader: fn(RecvStream) -> SR,
) where
    CW: Sink<Bytes, Error = io::Error> + Unpin,
    CR: Stream<Item = io::Result<Bytes>> + Unpin,
    SW: Sink<Bytes, Error = io::Error> + Unpin,
    SR: Stream<Item = io::Result<Bytes>> + Unpin,
{
    let p = pair(&rt).await;
    let server = async {
        let (send, recv) = p.server.accept_bi().await.unwrap();
        let (mut out, mut messages) = (server_writer(send), server_reader(recv));
        let mut n = 0;
        while let Some(m) = messages.next().await {
            let m = m.expect("server: message");
            assert_eq!(m, message(n), "server: message {n}");
            out.send(m).await.expect("server: echo");
            n += 1;
        }
        out.close().await.expect("server: finish");
        n
    };
    let client = async {
        let (send, recv) = p.client.open_bi().await.unwrap();
        let (mut out, mut echoes) = (client_writer(send), client_reader(recv));
        let write = async {
            for i in 0..MESSAGES {
                out.feed(message(i)).await.expect("client: send");
            }
            out.close().await.expect("client: finish");
        };
        let read = async {
            let mut n = 0;
            while let Some(m) = echoes.next().await {
                assert_eq!(m.expect("client: echo"), message(n), "client: echo {n}");
                n += 1;
            }
            n
        };
        futures_lite::future::zip(write, read).await.1
    };
    let (served, echoed) = within(
        &rt,
        "10,000 messages",
        futures_lite::future::zip(server, client),
    )
    .await;
    assert_eq!((served, echoed), (MESSAGES, MESSAGES));

    // A peer that announces a message past the limit: an error naming the limit, not a 4 GiB buffer.
    let (mut send, _r) = p.client.open_bi().await.unwrap();
    send.write_all_and_finish(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    let (_s, recv) = within(&rt, "accept", p.server.accept_bi()).await.unwrap();
    let err = within(&rt, "too long", server_reader(recv).next())
        .await
        .expect("an item")
        .expect_err("past the limit");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(
        err.to_string()
            .contains(&format!("limit of {DEFAULT_MAX_MESSAGE_LEN} bytes")),
        "{err}"
    );
}

mod length_prefixed_messages {
    use super::*;

    #[test]
    fn tokio() {
        on_tokio(|rt| {
            messages_round_trip(
                rt,
                tokio_framing::message_writer,
                tokio_framing::message_reader,
                tokio_framing::message_writer,
                tokio_framing::message_reader,
            )
        })
    }

    #[test]
    fn async_std() {
        on_async_std(|rt| {
            messages_round_trip(
                rt,
                futures_framing::message_writer,
                futures_framing::message_reader,
                futures_framing::message_writer,
                futures_framing::message_reader,
            )
        })
    }

    /// The two families frame alike: a tokio-util writer's messages read by asynchronous-codec, and back.
    #[test]
    fn families_interoperate() {
        on_tokio(|rt| {
            messages_round_trip(
                rt,
                tokio_framing::message_writer,
                tokio_framing::message_reader,
                futures_framing::message_writer,
                futures_framing::message_reader,
            )
        })
    }

    /// The 4-byte big-endian prefix, as pywebtransport's examples write it by hand.
    #[test]
    fn wire_format_is_a_four_byte_big_endian_length() {
        on_async_std(|rt| async move {
            let p = pair(&rt).await;
            let (send, recv) = p.client.open_bi().await.unwrap();
            let mut out = futures_framing::message_writer(send);
            out.send(Bytes::from_static(b"abc")).await.unwrap();
            out.close().await.unwrap();
            let (mut s, mut r) = within(&rt, "accept", p.server.accept_bi()).await.unwrap();
            assert_eq!(
                within(&rt, "raw", r.read_all()).await.unwrap(),
                [0, 0, 0, 3, b'a', b'b', b'c']
            );
            s.write_all_and_finish(&[0, 0, 0, 2, b'h', b'i', 0, 0, 0, 0])
                .await
                .unwrap();
            let got: Vec<Bytes> = within(
                &rt,
                "framed",
                tokio_framing::message_reader(recv)
                    .map(|m| m.unwrap())
                    .collect::<Vec<_>>(),
            )
            .await;
            assert_eq!(got, [Bytes::from_static(b"hi"), Bytes::new()]);
        })
    }
}

/// Lines: `\n` and `\r\n` endings, UTF-8, an empty line, and a line past the limit.
async fn lines_body<W, R>(rt: Rt, writer: fn(SendStream) -> W, reader: fn(RecvStream) -> R)
where
    W: for<'a> Sink<&'a str, Error = io::Error> + Unpin,
    R: Stream<Item = io::Result<String>> + Unpin,
{
    let p = pair(&rt).await;
    let (send, _r) = p.client.open_bi().await.unwrap();
    let mut out = writer(send);
    for line in ["hello", "wörld ✓", "", "last"] {
        out.send(line).await.unwrap();
    }
    out.close().await.unwrap();
    let (_s, recv) = within(&rt, "accept", p.server.accept_bi()).await.unwrap();
    let lines: Vec<String> = within(
        &rt,
        "lines",
        reader(recv).map(|l| l.unwrap()).collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(lines, ["hello", "wörld ✓", "", "last"]);

    // Written by hand: CRLF endings and a last line without one.
    let (mut send, _r) = p.client.open_bi().await.unwrap();
    send.write_all_and_finish(b"GET /a\r\nHost: x\r\n\r\ntail")
        .await
        .unwrap();
    let (_s, recv) = within(&rt, "accept", p.server.accept_bi()).await.unwrap();
    let lines: Vec<String> = within(
        &rt,
        "crlf lines",
        reader(recv).map(|l| l.unwrap()).collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(lines, ["GET /a", "Host: x", "", "tail"]);

    // A line longer than the limit is an error naming it.
    let (mut send, _r) = p.client.open_bi().await.unwrap();
    let long = vec![b'x'; DEFAULT_MAX_LINE_LEN + 10];
    let write = send.write_all_and_finish(&long);
    let (_s, recv) = within(&rt, "accept", p.server.accept_bi()).await.unwrap();
    let mut lines = reader(recv);
    let (w, first) = within(
        &rt,
        "long line",
        futures_lite::future::zip(write, lines.next()),
    )
    .await;
    w.unwrap();
    let err = first.expect("an item").expect_err("past the limit");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(
        err.to_string()
            .contains(&format!("limit of {DEFAULT_MAX_LINE_LEN} bytes")),
        "{err}"
    );
}

mod line_framing {
    use super::*;

    #[test]
    fn tokio() {
        on_tokio(|rt| lines_body(rt, tokio_framing::line_writer, tokio_framing::line_reader))
    }

    #[test]
    fn async_std() {
        on_async_std(|rt| {
            lines_body(
                rt,
                futures_framing::line_writer,
                futures_framing::line_reader,
            )
        })
    }
}

on_both_runtimes!(read_exact_and_a_stream_that_ends_first, |rt| async move {
    let p = pair(&rt).await;
    let (mut send, _r) = p.client.open_bi().await.unwrap();
    // A 4-byte length, then the body: the seed's read_length_prefixed, written with read_exact.
    let mut framed = 11u32.to_be_bytes().to_vec();
    framed.extend_from_slice(b"hello world");
    send.write_all_and_finish(&framed).await.unwrap();
    let (_s, mut recv) = within(&rt, "accept", p.server.accept_bi()).await.unwrap();
    let mut len = [0u8; 4];
    within(&rt, "header", recv.read_exact(&mut len))
        .await
        .unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    within(&rt, "body", recv.read_exact(&mut body))
        .await
        .unwrap();
    assert_eq!(body, b"hello world");
    assert_eq!(within(&rt, "end", recv.read(&mut [0u8; 1])).await, Ok(None));

    // Three bytes, five wanted.
    let mut uni = p.client.open_uni().await.unwrap();
    uni.write_all_and_finish(b"abc").await.unwrap();
    let mut recv = within(&rt, "accept uni", p.server.accept_uni())
        .await
        .unwrap();
    let mut buf = [0u8; 5];
    let err = within(&rt, "short", recv.read_exact(&mut buf))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ReadError::EndedEarly {
            expected: 5,
            read: 3
        }
    );
    assert_eq!(&buf[..3], b"abc");
    assert_eq!(
        err.to_string(),
        "the stream ended after 3 of the 5 expected bytes"
    );
    assert_eq!(io::Error::from(err).kind(), io::ErrorKind::UnexpectedEof);
});

on_both_runtimes!(read_all_stops_at_its_limit, |rt| async move {
    let p = pair(&rt).await;
    // read_to_end's limit, exactly: at the limit is fine, one byte more is not.
    for (len, ok) in [(1000, true), (1001, false)] {
        let mut uni = p.client.open_uni().await.unwrap();
        uni.write_all_and_finish(&payload(0, len)).await.unwrap();
        let mut recv = within(&rt, "accept", p.server.accept_uni()).await.unwrap();
        let r = within(&rt, "read_to_end", recv.read_to_end(1000)).await;
        match r {
            Ok(data) if ok => assert_eq!(data, payload(0, len)),
            Err(ReadError::TooLong { limit: 1000 }) if !ok => {}
            other => panic!("{len} bytes: {other:?}"),
        }
    }
    // read_all's named default: one byte past DEFAULT_READ_ALL_LIMIT fails and stops the stream.
    let (mut send, _r) = p.client.open_bi().await.unwrap();
    let big = vec![7u8; DEFAULT_READ_ALL_LIMIT + 1];
    let write = send.write_all_and_finish(&big);
    let (_s, mut recv) = within(&rt, "accept", p.server.accept_bi()).await.unwrap();
    let (w, r) = within(
        &rt,
        "read_all",
        futures_lite::future::zip(write, recv.read_all()),
    )
    .await;
    let err = r.unwrap_err();
    assert_eq!(
        err,
        ReadError::TooLong {
            limit: DEFAULT_READ_ALL_LIMIT
        }
    );
    assert!(
        err.to_string()
            .contains(&format!("limit of {DEFAULT_READ_ALL_LIMIT} bytes")),
        "{err}"
    );
    // The reader stopped the stream (STOP_SENDING, code 0): the writer hears it unless it had finished.
    if let Err(e) = w {
        assert_eq!(e, tern_async::WriteError::Stopped(Some(0)));
    }
});

on_both_runtimes!(receive_with_timeout, |rt| async move {
    let p = pair(&rt).await;
    // Fires: nothing is sent.
    let wait = Duration::from_millis(150);
    let started = Instant::now();
    let r = within(&rt, "timeout", p.server.recv_datagram_timeout(wait)).await;
    assert_eq!(r, Err(SessionError::TimedOut(wait)));
    assert!(started.elapsed() >= wait, "{:?}", started.elapsed());
    assert!(p.server.is_open(), "a timeout leaves the session open");

    // Does not fire: the datagram comes first.
    p.client.send_datagram(b"on time").unwrap();
    let d = p
        .server
        .recv_datagram_timeout(STEP)
        .await
        .expect("datagram");
    assert_eq!(&d[..], b"on time");

    // Any future, on the session's runtime timer: a stream whose end never comes...
    let (mut send, _r) = p.client.open_bi().await.unwrap();
    send.write_all(b"no end yet").await.unwrap();
    let (_s, mut recv) = within(&rt, "accept", p.server.accept_bi()).await.unwrap();
    let r = p.server.timeout(wait, recv.read_all()).await;
    assert_eq!(r, Err(tern_async::Elapsed(wait)));
    // ... and one that ends in time.
    let (mut send, _r) = p.client.open_bi().await.unwrap();
    send.write_all_and_finish(b"done").await.unwrap();
    let (_s, mut recv) = within(&rt, "accept", p.server.accept_bi()).await.unwrap();
    let r = p.server.timeout(STEP, recv.read_all()).await;
    assert_eq!(r, Ok(Ok(b"done".to_vec())));
});
