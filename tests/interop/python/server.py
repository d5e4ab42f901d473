#!/usr/bin/env python3
"""pywebtransport (0.21.x) interop server for Tern.

Usage: server.py --cert PEM --key PEM [--host 127.0.0.1] [--port 0] [-v]

Prints exactly one line "ready PORT" once listening, then one line
"closed code=<N|none> reason=<text>" each time an accepted session ends.
Everything else (diagnostics) goes to stderr. Runs until SIGTERM/SIGINT.

Behaviour on sessions whose path is /echo, / or /interop (others: 404):
  * every datagram is echoed back unchanged;
  * every client bidi stream is read to its end; b"close" makes the server
    close the session with code 42, reason "bye"; anything else is written
    back on the same stream, which is then finished;
  * every client uni stream is read to its end and echoed on a new
    server-opened uni stream, finished;
  * on /interop only: right after accepting, the server opens a bidi stream
    with b"server-bidi" (finished), reads the client's reply to its end, then
    opens a uni stream with b"server-uni" (finished).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys

ACCEPTED_PATHS = ("/echo", "/", "/interop")
CLOSE_TRIGGER = b"close"
CLOSE_CODE = 42
CLOSE_REASON = "bye"

# Reasons pywebtransport 0.21 invents itself when a session ends without a
# CLOSE_WEBTRANSPORT_SESSION capsule from the peer (connection closed, local
# abort, ...). A session closed by such an event has no peer close code.
_SYNTHETIC_REASON_PREFIXES = ("closed by peer", "wt_connection ", "wt_session ")

log = logging.getLogger("interop-server")


def out(line: str) -> None:
    """Print one protocol line on stdout and flush it."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


@dataclasses.dataclass
class SessionTracker:
    label: str
    local_close: bool = False
    close_event: dict | None = None
    closed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    reported: bool = False


def report_closed(tracker: SessionTracker) -> None:
    if tracker.reported:
        return
    tracker.reported = True
    ev = tracker.close_event
    code = ev.get("error_code") if ev else None
    reason = ev.get("reason") if ev else None
    reason = "" if reason is None else str(reason)
    if tracker.local_close:
        log.info("%s: ended after our own close (library reported code=%s reason=%r)", tracker.label, code, reason)
        out("closed code=none reason=")
    elif code is None or reason.startswith(_SYNTHETIC_REASON_PREFIXES):
        log.info("%s: ended without a peer close capsule (library reported code=%s reason=%r)",
                 tracker.label, code, reason)
        out("closed code=none reason=")
    else:
        out(f"closed code={code} reason={one_line(reason)}")


async def echo_datagrams(session, tracker: SessionTracker) -> None:
    while True:
        try:
            data = await session.read_datagram()
        except Exception as e:  # session closed
            log.debug("%s: datagram loop ends: %r", tracker.label, e)
            return
        try:
            await session.send_datagram(data=data)
        except Exception as e:
            log.warning("%s: datagram echo of %d bytes failed: %r", tracker.label, len(data), e)


async def handle_bidi(session, stream, tracker: SessionTracker) -> None:
    try:
        data = await stream.read_all()
        if data == CLOSE_TRIGGER:
            log.info("%s: got %r on bidi stream %d, closing session with %d/%r",
                     tracker.label, data, stream.stream_id, CLOSE_CODE, CLOSE_REASON)
            tracker.local_close = True
            await session.close(error_code=CLOSE_CODE, reason=CLOSE_REASON)
            return
        await stream.write_all(data=data, end_stream=True)
        log.debug("%s: echoed %d bytes on bidi stream %d", tracker.label, len(data), stream.stream_id)
    except Exception as e:
        log.warning("%s: bidi stream %d failed: %r", tracker.label, stream.stream_id, e)


async def handle_uni(session, stream, tracker: SessionTracker) -> None:
    try:
        data = await stream.read_all()
        reply = await session.create_unidirectional_stream()
        await reply.write_all(data=data, end_stream=True)
        log.debug("%s: echoed %d bytes from uni stream %d on uni stream %d",
                  tracker.label, len(data), stream.stream_id, reply.stream_id)
    except Exception as e:
        log.warning("%s: uni stream %d failed: %r", tracker.label, stream.stream_id, e)


async def accept_bidi_streams(session, tracker: SessionTracker, tasks: set) -> None:
    async for stream in session.incoming_bidirectional_streams():
        spawn(tasks, handle_bidi(session, stream, tracker))


async def accept_uni_streams(session, tracker: SessionTracker, tasks: set) -> None:
    async for stream in session.incoming_unidirectional_streams():
        spawn(tasks, handle_uni(session, stream, tracker))


async def interop_extras(session, tracker: SessionTracker) -> None:
    try:
        bidi = await session.create_bidirectional_stream()
        await bidi.write_all(data=b"server-bidi", end_stream=True)
        reply = await bidi.read_all()
        log.debug("%s: client replied %r on server bidi stream %d", tracker.label, reply[:64], bidi.stream_id)
        uni = await session.create_unidirectional_stream()
        await uni.write_all(data=b"server-uni", end_stream=True)
    except Exception as e:
        log.info("%s: /interop server-opened streams stopped: %r", tracker.label, e)


def spawn(tasks: set, coro) -> asyncio.Task:
    task = asyncio.create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


async def handle_session(session, label: str) -> None:
    from pywebtransport.types import EventType

    path = session.path.split("?", 1)[0]
    if path not in ACCEPTED_PATHS:
        log.info("%s: rejecting path %r with 404", label, session.path)
        try:
            await session.reject(status_code=404)
        except Exception as e:
            log.warning("%s: reject failed: %r", label, e)
        return

    tracker = SessionTracker(label=label)

    def on_closed(event) -> None:
        if tracker.close_event is None:
            tracker.close_event = dict(event.data or {})
        tracker.closed.set()

    session.events.on(event_type=EventType.SESSION_CLOSED, handler=on_closed)
    try:
        await session.accept()
    except Exception as e:
        log.warning("%s: accept failed: %r", label, e)
        return
    log.info("%s: accepted %r, headers=%r", label, session.path, session.headers)

    tasks: set[asyncio.Task] = set()
    spawn(tasks, echo_datagrams(session, tracker))
    bidi_loop = spawn(tasks, accept_bidi_streams(session, tracker, tasks))
    spawn(tasks, accept_uni_streams(session, tracker, tasks))
    if path == "/interop":
        spawn(tasks, interop_extras(session, tracker))

    # The incoming-stream generator ends when the session is closed, whether
    # by a SESSION_CLOSED event or by the connection going away.
    await asyncio.wait({bidi_loop, asyncio.create_task(tracker.closed.wait())},
                       return_when=asyncio.FIRST_COMPLETED)
    if not tracker.closed.is_set():
        # Connection-level close may not emit a session event: give it a moment.
        try:
            await asyncio.wait_for(tracker.closed.wait(), timeout=0.5)
        except asyncio.TimeoutError:
            pass
    report_closed(tracker)
    for task in list(tasks):
        task.cancel()


async def handle_connection(connection, conn_no: int, tasks: set) -> None:
    log.info("conn%d: new connection from %s", conn_no, connection.remote_address)
    sess_no = 0
    async for session in connection.incoming_sessions():
        sess_no += 1
        spawn(tasks, handle_session(session, f"conn{conn_no}/session{sess_no}"))
    log.info("conn%d: closed", conn_no)


def make_config(args):
    from pywebtransport import ServerConfig

    # ServerConfig refuses port 0 (it validates 1..65535), but the Rust core binds
    # whatever it is given: bypass the check for the "pick a free port" case.
    config = ServerConfig(
        bind_host=args.host,
        bind_port=args.port if args.port else 4433,
        certfile=args.cert,
        keyfile=args.key,
        max_idle_timeout=30.0,
    )
    if args.port == 0:
        object.__setattr__(config, "bind_port", 0)
    return config


async def amain(args) -> int:
    from pywebtransport import WebTransportServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    server = WebTransportServer(config=make_config(args))
    try:
        await server.listen()
    except Exception as e:
        cause = e.__cause__ or e.__context__
        print(f"server.py: cannot listen on {args.host} port {args.port}: {e}"
              + (f" ({cause})" if cause else ""), file=sys.stderr)
        return 1
    addresses = server.local_addresses
    if not addresses:
        log.error("server has no local address")
        return 1
    port = addresses[0][1]
    log.info("listening on %s", addresses)
    out(f"ready {port}")

    tasks: set[asyncio.Task] = set()

    async def accept_loop() -> None:
        conn_no = 0
        async for connection in server.incoming_connections():
            conn_no += 1
            spawn(tasks, handle_connection(connection, conn_no, tasks))

    acceptor = asyncio.create_task(accept_loop())
    await stop.wait()
    log.info("stopping")
    acceptor.cancel()
    for task in list(tasks):
        task.cancel()
    try:
        await asyncio.wait_for(server.close(), timeout=5)
    except Exception as e:
        log.warning("close: %r", e)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="UDP port, 0 = pick a free one (default)")
    parser.add_argument("--cert", required=True, help="certificate chain (PEM)")
    parser.add_argument("--key", required=True, help="private key (PEM)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: log to stderr; -vv: also pywebtransport's Rust debug trace (RUST_LOG)")
    args = parser.parse_args()

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="server %(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.verbose < 2:
        logging.getLogger("pywebtransport").setLevel(logging.WARNING)
    if args.verbose >= 2:
        os.environ.setdefault("RUST_LOG", "_pywebtransport=debug")
        from pywebtransport import _pywebtransport

        _pywebtransport.init_tracing()
    for path in (args.cert, args.key):
        if not os.path.isfile(path):
            parser.error(f"no such file: {path}")
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
