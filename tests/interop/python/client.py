#!/usr/bin/env python3
"""pywebtransport (0.21.x) interop client for Tern.

Usage: client.py URL [--ca PEM | --insecure] [-v]

Only the scheme/host/port of URL are used; the client builds its own paths.
Runs the checks below against a server that behaves like server.py, prints one
line per check ("ok <name>" or "FAIL <name>: <why>") on stdout and exits 0 only
if every check passed (1 otherwise, 2 on usage errors). Overall timeout 30 s.

Session A (/interop):
  datagram-64, datagram-256, datagram-1024   datagram echoes, byte for byte
                                             (each resent up to 3 times, 1 s apart)
  bidi-echo-100k    100 KiB on a client bidi stream, finished, echoed back
  uni-echo-10k      10 KiB on a client uni stream, echoed on a server uni stream
  server-bidi       server-opened bidi stream carries b"server-bidi"; echoed back
  server-uni        server-opened uni stream carries b"server-uni"
  client-close      session closed by us with code 7, reason "done"
Session B (/interop):
  server-close      after b"close" on a bidi stream, the server closes the
                    session with code 42, reason "bye"
Session C (/nope):
  reject-404        the CONNECT is answered with status 404

Certificate verification: --ca PEM trusts that file (a CA or the self-signed
server certificate itself); --insecure disables verification; with neither the
system trust store is used. pywebtransport cannot pin a certificate by hash.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import ssl
import sys
import threading
import time
import urllib.parse

OVERALL_TIMEOUT = 30.0

# Checks that need the /interop behaviour (skipped with --echo-only, against a plain echo server such as
# `tern serve`).
INTEROP_ONLY = {"server-bidi", "server-uni", "server-close"}

CHECKS = [
    "datagram-64",
    "datagram-256",
    "datagram-1024",
    "bidi-echo-100k",
    "uni-echo-10k",
    "server-bidi",
    "server-uni",
    "client-close",
    "server-close",
    "reject-404",
]

log = logging.getLogger("interop-client")


def pattern(n: int, mul: int, add: int, mod: int) -> bytes:
    return bytes((i * mul + add) % mod for i in range(n))


BIDI_PAYLOAD = pattern(100 * 1024, 31, 7, 251)
UNI_PAYLOAD = pattern(10 * 1024, 17, 3, 253)


def datagram_payload(size: int) -> bytes:
    # Distinct per size: the first bytes spell the size, the rest is a pattern seeded by it.
    head = f"dgram-{size}:".encode()
    return (head + pattern(size, 13, size % 251, 256))[:size]


def describe_mismatch(got: bytes, want: bytes) -> str:
    if len(got) != len(want):
        prefix = os.path.commonprefix([got, want])
        return f"got {len(got)} bytes, want {len(want)} (first {len(prefix)} bytes match)"
    first = next(i for i in range(len(want)) if got[i] != want[i])
    return f"content differs at offset {first} (got 0x{got[first]:02x}, want 0x{want[first]:02x})"


def describe_exc(e: BaseException) -> str:
    parts = []
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e) or type(e).__name__
        parts.append(f"{type(e).__name__}: {text}")
        e = e.__cause__ or e.__context__
    return " <- ".join(parts)


class Results:
    def __init__(self) -> None:
        self.status: dict[str, tuple[bool, str]] = {}

    def ok(self, name: str, note: str = "") -> None:
        self._set(name, True, note)

    def fail(self, name: str, why: str) -> None:
        self._set(name, False, why)

    def _set(self, name: str, passed: bool, text: str) -> None:
        if name in self.status:
            return
        self.status[name] = (passed, text)
        if passed:
            line = f"ok {name}" + (f" ({text})" if text else "")
        else:
            line = f"FAIL {name}: {text}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def fail_rest(self, names, why: str) -> None:
        for name in names:
            self.fail(name, why)

    def all_passed(self) -> bool:
        return all(self.status.get(name, (False, ""))[0] for name in CHECKS)


class RustLogTap:
    """Reads pywebtransport's Rust trace output (written to fd 2) to learn the
    HTTP status of a rejected CONNECT, which the Python API does not expose.

    fd 2 is redirected into a pipe; Python's own sys.stderr keeps writing to the
    real stderr. Trace lines are forwarded only when verbose (WARN/ERROR always).
    """

    _ansi = re.compile(r"\x1b\[[0-9;]*m")
    _status = re.compile(r'wt_session abort connection_handle=(\d+) err=Some\(b"(\d{3})"\)')
    _conn_abort = re.compile(r"wt_connection abort actual=(\w+) connection_handle=(\d+) err=(\d+)")

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.statuses: list[tuple[int, int]] = []
        self.conn_aborts: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.real_stderr_fd = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        sys.stderr = open(self.real_stderr_fd, "w", buffering=1, closefd=False)
        self.thread = threading.Thread(target=self._pump, args=(read_fd,), daemon=True)
        self.thread.start()

        directive = "_pywebtransport::protocol::connection=debug"
        if self.verbose:
            directive = "_pywebtransport=debug"
        base = os.environ.get("RUST_LOG")
        os.environ["RUST_LOG"] = f"{base},{directive}" if base else f"warn,{directive}"
        from pywebtransport import _pywebtransport

        _pywebtransport.init_tracing()

    def _pump(self, read_fd: int) -> None:
        with open(read_fd, "rb", closefd=True) as pipe:
            for raw in pipe:
                line = self._ansi.sub("", raw.decode("utf-8", "replace"))
                m = self._status.search(line)
                if m:
                    with self.lock:
                        self.statuses.append((int(m.group(1)), int(m.group(2))))
                m = self._conn_abort.search(line)
                if m:
                    with self.lock:
                        self.conn_aborts.append((m.group(1), int(m.group(3))))
                if self.verbose or not re.search(r"\b(DEBUG|TRACE|INFO)\b", line):
                    try:
                        os.write(self.real_stderr_fd, line.encode())
                    except OSError:
                        pass

    def take_conn_aborts(self) -> list[tuple[str, int]]:
        with self.lock:
            got = list(self.conn_aborts)
            self.conn_aborts.clear()
            return got

    def take_statuses(self) -> list[tuple[int, int]]:
        with self.lock:
            got = list(self.statuses)
            self.statuses.clear()
            return got


TLS_ALERTS = {
    40: "handshake_failure", 42: "bad_certificate", 43: "unsupported_certificate",
    45: "certificate_expired", 46: "certificate_unknown", 48: "unknown_ca",
    80: "internal_error", 120: "no_application_protocol",
}

TAP: "RustLogTap | None" = None


def error_name(code: int) -> str:
    from pywebtransport import ErrorCodes

    try:
        return ErrorCodes(code).name
    except ValueError:
        return "unknown"


async def connect_failure(e: BaseException) -> str:
    """Explain a failed connect; adds the QUIC/TLS error seen in the trace."""
    text = describe_exc(e)
    if TAP is None:
        return text
    await asyncio.sleep(0.1)
    aborts = TAP.take_conn_aborts()
    if aborts:
        state, code = aborts[-1]
        if 0x100 <= code <= 0x1FF:
            alert = code - 0x100
            hint = f"TLS handshake failed: alert {alert} ({TLS_ALERTS.get(alert, 'see RFC 8446')})"
            if 42 <= alert <= 48:
                hint += ": check the server certificate and --ca/--insecure"
            text = f"{hint}; {text}"
        else:
            text = f"connection aborted in state {state} with error 0x{code:x} ({error_name(code)}); {text}"
    return text


def make_client(args):
    from pywebtransport import ClientConfig, WebTransportClient

    kwargs = dict(connect_timeout=8.0, max_idle_timeout=30.0)
    if args.insecure:
        kwargs["verify_mode"] = ssl.CERT_NONE
    elif args.ca:
        kwargs["ca_certs"] = args.ca
        kwargs["verify_mode"] = ssl.CERT_REQUIRED
    return WebTransportClient(config=ClientConfig(**kwargs))


async def wt_connect(client, url: str):
    """client.connect() with the trace bookkeeping reset, so that a failure is
    explained by this connection's own trace lines."""
    if TAP is not None:
        TAP.take_conn_aborts()
        TAP.take_statuses()
    return await client.connect(url=url)


async def close_connection(session) -> None:
    try:
        await asyncio.wait_for(session.connection.close(), timeout=3)
    except Exception as e:
        log.debug("connection close: %r", e)


async def session_a(client, base: str, results: Results, echo_only: bool = False) -> None:
    names = [n for n in CHECKS[:8] if not (echo_only and n in INTEROP_ONLY)]
    path = "/echo" if echo_only else "/interop"
    try:
        session = await wt_connect(client, base + path)
    except Exception as e:
        results.fail_rest(names, f"connect to /interop failed: {await connect_failure(e)}")
        return
    log.info("session A established (wt_protocol=%r)", session.wt_protocol)

    tasks: list[asyncio.Task] = []

    # Datagram receiver: every datagram lands in `received`.
    received: list[bytes] = []
    dgram_cond = asyncio.Condition()

    async def read_datagrams() -> None:
        while True:
            try:
                data = await session.read_datagram()
            except Exception as e:
                log.debug("datagram reader ends: %r", e)
                return
            async with dgram_cond:
                received.append(bytes(data))
                dgram_cond.notify_all()

    # Server-opened uni streams: contents collected in arrival order.
    uni_contents: list[bytes] = []
    uni_cond = asyncio.Condition()

    async def read_uni(stream) -> None:
        try:
            data = await stream.read_all()
        except Exception as e:
            data = f"<read failed: {describe_exc(e)}>".encode()
        async with uni_cond:
            uni_contents.append(data)
            uni_cond.notify_all()

    async def accept_uni() -> None:
        async for stream in session.incoming_unidirectional_streams():
            tasks.append(asyncio.create_task(read_uni(stream)))

    # d. the server-opened bidi stream.
    # Runs from the start (the server opens it right after accepting); its
    # result is reported at step d. Returns None on success, else why it failed.
    async def server_bidi() -> str | None:
        try:
            async for stream in session.incoming_bidirectional_streams():
                data = await stream.read_all()
                await stream.write_all(data=data, end_stream=True)
                if data != b"server-bidi":
                    return f"content {data[:64]!r}, want b'server-bidi'"
                return None
            return "session closed before a server-opened bidi stream arrived"
        except Exception as e:
            return describe_exc(e)

    async def wait_uni(name: str, want: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with uni_cond:
            while want not in uni_contents:
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [f"{len(c)} bytes {c[:16]!r}" for c in uni_contents]
                    results.fail(name, f"no server uni stream with the expected {len(want)} bytes "
                                       f"within {timeout:.0f} s (got {seen or 'none'})")
                    return
                try:
                    await asyncio.wait_for(uni_cond.wait(), timeout=left)
                except asyncio.TimeoutError:
                    pass
        results.ok(name)

    tasks.append(asyncio.create_task(read_datagrams()))
    tasks.append(asyncio.create_task(accept_uni()))
    server_bidi_task = asyncio.create_task(server_bidi())

    try:
        # a. datagrams
        for size in (64, 256, 1024):
            name = f"datagram-{size}"
            payload = datagram_payload(size)
            echoed = False
            error = None
            for attempt in range(4):
                try:
                    await session.send_datagram(data=payload)
                except Exception as e:
                    error = f"send failed: {describe_exc(e)}"
                    break
                deadline = time.monotonic() + 1.0
                async with dgram_cond:
                    while payload not in received:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        try:
                            await asyncio.wait_for(dgram_cond.wait(), timeout=left)
                        except asyncio.TimeoutError:
                            pass
                    echoed = payload in received
                if echoed:
                    break
                log.info("%s: no echo after attempt %d", name, attempt + 1)
            if echoed:
                results.ok(name, f"after {attempt + 1} send(s)" if attempt else "")
            else:
                wrong = [d for d in received if len(d) == size]
                why = error or "no echo after 4 sends, 1 s apart"
                if wrong and not error:
                    why += f"; got a {size}-byte datagram that differs: {describe_mismatch(wrong[0], payload)}"
                results.fail(name, why)

        # b. client bidi stream, 100 KiB
        try:
            stream = await session.create_bidirectional_stream()
            await stream.write_all(data=BIDI_PAYLOAD, end_stream=True)
            echo = await asyncio.wait_for(stream.read_all(), timeout=10)
            if echo == BIDI_PAYLOAD:
                results.ok("bidi-echo-100k")
            else:
                results.fail("bidi-echo-100k", describe_mismatch(echo, BIDI_PAYLOAD))
        except Exception as e:
            results.fail("bidi-echo-100k", describe_exc(e) or "timeout")

        # c. client uni stream, 10 KiB, echoed on a server uni stream
        try:
            stream = await session.create_unidirectional_stream()
            await stream.write_all(data=UNI_PAYLOAD, end_stream=True)
            await wait_uni("uni-echo-10k", UNI_PAYLOAD, timeout=10)
        except Exception as e:
            results.fail("uni-echo-10k", describe_exc(e))

        # d. server-opened bidi stream (handled concurrently since connect)
        if not echo_only:
            try:
                why = await asyncio.wait_for(asyncio.shield(server_bidi_task), timeout=10)
            except asyncio.TimeoutError:
                why = "no server-opened bidi stream (or no end of it) within 10 s"
            if why is None:
                results.ok("server-bidi")
            else:
                results.fail("server-bidi", why)

            # e. server-opened uni stream with b"server-uni"
            await wait_uni("server-uni", b"server-uni", timeout=10)

        # f. close with 7 / "done"
        try:
            await session.close(error_code=7, reason="done")
            if session.is_closed:
                results.ok("client-close")
            else:
                results.fail("client-close", "session not marked closed after close()")
        except Exception as e:
            results.fail("client-close", describe_exc(e))
        # Let the capsule and the server's FIN travel before the connection goes.
        await asyncio.sleep(0.3)
    finally:
        server_bidi_task.cancel()
        for task in tasks:
            task.cancel()
        await close_connection(session)


async def session_b(client, base: str, results: Results) -> None:
    from pywebtransport.types import EventType

    name = "server-close"
    try:
        session = await wt_connect(client, base + "/interop")
    except Exception as e:
        results.fail(name, f"connect to /interop failed: {await connect_failure(e)}")
        return
    closed: asyncio.Future = asyncio.get_running_loop().create_future()

    def on_closed(event) -> None:
        if not closed.done():
            closed.set_result(dict(event.data or {}))

    session.events.on(event_type=EventType.SESSION_CLOSED, handler=on_closed)
    try:
        stream = await session.create_bidirectional_stream()
        await stream.write_all(data=b"close", end_stream=True)
        try:
            data = await asyncio.wait_for(closed, timeout=5)
        except asyncio.TimeoutError:
            state = "closed without a close event" if session.is_closed else "still open"
            results.fail(name, f"no session close within 5 s (session {state})")
            return
        code, reason = data.get("error_code"), data.get("reason")
        if code == 42 and reason == "bye":
            results.ok(name)
        else:
            results.fail(name, f"closed with code={code} reason={reason!r}, want 42/'bye'")
    except Exception as e:
        results.fail(name, describe_exc(e))
    finally:
        await close_connection(session)


async def session_c(client, base: str, results: Results, tap: RustLogTap | None) -> None:
    name = "reject-404"
    try:
        session = await wt_connect(client, base + "/nope")
    except Exception as e:
        # pywebtransport reports any non-2xx answer as SessionError "wt_session abort"
        # with error_code H3_REQUEST_REJECTED (0x10b); the status only shows in its trace.
        await asyncio.sleep(0.2)
        statuses = [s for _, s in tap.take_statuses()] if tap else []
        error_code = getattr(e, "error_code", None)
        if statuses == [404]:
            results.ok(name)
        elif statuses:
            results.fail(name, f"rejected with status {statuses}, want 404")
        elif error_code == 0x10B:
            results.fail(name, "rejected (H3_REQUEST_REJECTED) but the status code could not be read "
                               "from pywebtransport's trace")
        else:
            results.fail(name, f"connect failed, but not with a rejection status: {await connect_failure(e)}")
        return
    results.fail(name, "session to /nope was accepted")
    try:
        await session.close()
    finally:
        await close_connection(session)


async def amain(args, tap: RustLogTap | None) -> int:
    parsed = urllib.parse.urlsplit(args.url)
    if parsed.scheme != "https" or not parsed.hostname:
        print(f"client.py: URL must be https://host[:port]/..., got {args.url!r}", file=sys.stderr)
        return 2
    base = f"https://{parsed.netloc}"

    results = Results()
    client = make_client(args)
    try:
        async with asyncio.timeout(OVERALL_TIMEOUT):
            await session_a(client, base, results, args.echo_only)
            if not args.echo_only:
                await session_b(client, base, results)
            await session_c(client, base, results, tap)
    except TimeoutError:
        results.fail_rest(CHECKS, f"overall timeout of {OVERALL_TIMEOUT:.0f} s reached")
    except Exception as e:
        results.fail_rest(CHECKS, f"unexpected error: {describe_exc(e)}")
    finally:
        try:
            await asyncio.wait_for(client.close(), timeout=5)
        except Exception as e:
            log.debug("client close: %r", e)
    checks = [c for c in CHECKS if not (args.echo_only and c in INTEROP_ONLY)]
    results.fail_rest(checks, "not run")
    passed = sum(1 for name in checks if results.status[name][0])
    print(f"client: {passed} passed, {len(checks) - passed} failed", file=sys.stderr)
    return 0 if all(results.status[name][0] for name in checks) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="https://HOST:PORT[/...] (path ignored)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--ca", metavar="PEM", help="trust this CA / self-signed certificate (PEM)")
    group.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log to stderr, including pywebtransport's Rust debug trace")
    parser.add_argument("--echo-only", action="store_true",
                        help="the server is a plain echo server (tern serve): session A on /echo, no "
                             "server-opened streams, no session B")
    parser.add_argument("--no-trace", action="store_true",
                        help="do not read pywebtransport's trace (reject-404 then cannot see the status)")
    args = parser.parse_args()
    if args.ca and not os.path.isfile(args.ca):
        parser.error(f"no such file: {args.ca}")

    global TAP
    tap = TAP = None if args.no_trace else RustLogTap(verbose=args.verbose)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="client %(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("pywebtransport").setLevel(logging.ERROR)
    return asyncio.run(amain(args, tap))


if __name__ == "__main__":
    sys.exit(main())
