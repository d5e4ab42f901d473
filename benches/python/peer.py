#!/usr/bin/env python3
"""pywebtransport (0.21.x) bench server and client for Tern's comparison harness.

Implements the bench protocol of benches/PROTOCOL.md:

    peer.py server --listen 127.0.0.1:0 --cert CERT.pem --key KEY.pem
    peer.py client --url https://127.0.0.1:PORT --ca CERT.pem --workload W [options]

The server prints "READY <port>" once it accepts sessions and runs until
SIGTERM/SIGINT or EOF on stdin. The client runs one workload and prints one
JSON object on one line; any failure exits non-zero with a message on stderr.

Configuration (pywebtransport's defaults otherwise, flow control and stream
limits included):
  * idle timeout 120 s and keep-alive off on both sides;
  * max_connections raised from 100 to 2000 on both sides (the idle workload
    holds 1000 sessions, each on its own connection).

pywebtransport's own limits, as seen with 0.21.1:
  * its default stream limits let about 10 bidirectional streams of a session
    be open at once, so the streams workload's other workers wait in
    create_bidirectional_stream (raising the limits made it slower);
  * the largest datagram it sends is 1161 bytes (its QUIC core does not grow
    the path MTU beyond 1200 bytes): the 1200-byte datagram workload fails
    with a message saying so.

Measurement notes:
  * cpu_seconds is resource.getrusage(RUSAGE_SELF) user + system time, which
    includes the threads of pywebtransport's Rust core;
  * "wire" in the datagram workload is null: pywebtransport reports no count of
    datagrams put on the wire;
  * every send_datagram is a request to the core that completes on a later
    turn of the event loop, so the sender keeps a few in flight. The core
    accepted every datagram in testing (what it cannot send is dropped, so
    "sent" can be far above "received"); a refused one would not be counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import resource
import signal
import ssl
import struct
import sys
import threading
import time
import urllib.parse

PATH_ECHO = "/echo"
PATH_SINK = "/sink"
CMD_UPLOAD = ord("U")
CMD_DOWNLOAD = ord("D")
CMD_COUNT = ord("C")

IDLE_TIMEOUT = 120.0
MAX_CONNECTIONS = 2000
# Writes are handed to the core in blocks of this many bytes (a whole number of
# 251-byte pattern periods, so consecutive blocks continue the pattern).
BLOCK = 251 * 1044  # 262044 bytes
# Datagram sends kept in flight at once by the datagram workload.
DATAGRAM_WINDOW = 8

log = logging.getLogger("bench-peer")


def pattern(offset: int, length: int) -> bytes:
    """The test pattern (byte i of a stream is i % 251) from `offset`."""
    period = bytes(range(251))
    start = offset % 251
    reps = (start + length) // 251 + 1
    return (period * reps)[start : start + length]


PATTERN_BLOCK = pattern(0, BLOCK)


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def common_config() -> dict:
    """Settings shared by the server and the client configuration."""
    return dict(
        max_idle_timeout=IDLE_TIMEOUT,
        keep_alive_interval=None,
        max_connections=MAX_CONNECTIONS,
    )


class Fail(Exception):
    """A failed check of the client: the message goes to stderr."""


# ---------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------


class Counters:
    """Datagrams received on one /sink session."""

    __slots__ = ("datagrams", "bytes")

    def __init__(self) -> None:
        self.datagrams = 0
        self.bytes = 0


def spawn(tasks: set, coro) -> asyncio.Task:
    """Start a task and keep a reference to it until it ends."""
    task = asyncio.create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


async def echo_stream(stream) -> None:
    """Writes back what it reads, as it reads it; finishes after the client's FIN."""
    try:
        while True:
            chunk = await stream.read()
            if not chunk:
                break
            await stream.write(data=chunk)
        await stream.write(data=b"", end_stream=True)
    except Exception as e:
        log.debug("echo stream %d: %r", stream.stream_id, e)


async def drain(stream) -> int:
    """Reads a stream to its end; returns the number of bytes."""
    total = 0
    while True:
        chunk = await stream.read()
        if not chunk:
            return total
        total += len(chunk)


async def sink_stream(stream, counters: Counters) -> None:
    """Runs one /sink command stream."""
    try:
        cmd = (await stream.readexactly(size=1))[0]
        if cmd == CMD_UPLOAD:
            total = await drain(stream)
            await stream.write(data=struct.pack(">Q", total), end_stream=True)
        elif cmd == CMD_DOWNLOAD:
            (n,) = struct.unpack(">Q", await stream.readexactly(size=8))
            await drain(stream)
            block = memoryview(PATTERN_BLOCK)
            while n > len(block):
                await stream.write(data=block)
                n -= len(block)
            await stream.write(data=block[:n], end_stream=True)
        elif cmd == CMD_COUNT:
            await drain(stream)
            await stream.write(data=struct.pack(">QQ", counters.datagrams, counters.bytes), end_stream=True)
        else:
            log.warning("unknown sink command %#04x", cmd)
            await stream.reset()
    except Exception as e:
        log.debug("sink stream %d: %r", stream.stream_id, e)


async def serve_datagrams(session, sink: bool, counters: Counters) -> None:
    """Counts (sink) or echoes every datagram until the session ends."""
    try:
        if sink:
            while True:
                data = await session.read_datagram()
                counters.datagrams += 1
                counters.bytes += len(data)
        else:
            while True:
                data = await session.read_datagram()
                try:
                    await session.send_datagram(data=data)
                except Exception as e:
                    log.debug("datagram echo: %r", e)
    except Exception as e:
        log.debug("datagram loop ends: %r", e)


async def serve_session(session, tasks: set) -> None:
    path = session.path.split("?", 1)[0]
    if path not in (PATH_ECHO, PATH_SINK):
        try:
            await session.reject(status_code=404)
        except Exception as e:
            log.debug("reject: %r", e)
        return
    try:
        await session.accept()
    except Exception as e:
        log.debug("accept: %r", e)
        return
    sink = path == PATH_SINK
    counters = Counters()
    datagrams = spawn(tasks, serve_datagrams(session, sink, counters))
    try:
        async for stream in session.incoming_bidirectional_streams():
            spawn(tasks, sink_stream(stream, counters) if sink else echo_stream(stream))
    finally:
        datagrams.cancel()


async def serve_connection(connection, tasks: set) -> None:
    async for session in connection.incoming_sessions():
        spawn(tasks, serve_session(session, tasks))


async def server_main(args) -> int:
    from pywebtransport import ServerConfig, WebTransportServer

    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]")
    port = int(port)
    # ServerConfig validates the port as 1..65535; the core binds whatever it is given, so port 0
    # (pick a free port) is set after validation.
    config = ServerConfig(
        bind_host=host,
        bind_port=port or 4433,
        certfile=args.cert,
        keyfile=args.key,
        **common_config(),
    )
    if port == 0:
        object.__setattr__(config, "bind_port", 0)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def watch_stdin() -> None:
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        loop.call_soon_threadsafe(stop.set)

    server = WebTransportServer(config=config)
    await server.listen()
    addresses = server.local_addresses
    if not addresses:
        print("peer.py: the server has no local address", file=sys.stderr)
        return 1
    sys.stdout.write(f"READY {addresses[0][1]}\n")
    sys.stdout.flush()
    threading.Thread(target=watch_stdin, daemon=True).start()

    tasks: set[asyncio.Task] = set()

    async def accept_loop() -> None:
        async for connection in server.incoming_connections():
            spawn(tasks, serve_connection(connection, tasks))

    acceptor = asyncio.create_task(accept_loop())
    await stop.wait()
    acceptor.cancel()
    for task in list(tasks):
        task.cancel()
    try:
        await asyncio.wait_for(server.close(), timeout=3)
    except Exception as e:
        log.debug("close: %r", e)
    return 0


# ---------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------


async def connect(client, base: str, path: str):
    try:
        return await client.connect(url=base + path)
    except Exception as e:
        raise Fail(f"connecting to {base}{path}: {e!r}") from e


async def close_session(session) -> None:
    """Closes a session's connection (each session here has its own)."""
    try:
        await asyncio.wait_for(session.connection.close(), timeout=3)
    except Exception as e:
        log.debug("connection close: %r", e)


async def read_to_end(stream) -> bytes:
    chunks = []
    while True:
        chunk = await stream.read()
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


async def bulk_up(client, base: str, n: int) -> dict:
    session = await connect(client, base, PATH_SINK)
    block = memoryview(PATTERN_BLOCK)
    start = time.monotonic()
    stream = await session.create_bidirectional_stream()
    await stream.write(data=bytes([CMD_UPLOAD]))
    left = n
    while left > len(block):
        await stream.write(data=block)
        left -= len(block)
    await stream.write(data=block[:left], end_stream=True)
    reply = await read_to_end(stream)
    seconds = time.monotonic() - start
    if len(reply) != 8:
        raise Fail(f"upload reply of {len(reply)} bytes, want 8")
    (got,) = struct.unpack(">Q", reply)
    if got != n:
        raise Fail(f"server counted {got} bytes, sent {n}")
    await close_session(session)
    return {"bytes": n, "seconds": seconds}


async def bulk_down(client, base: str, n: int) -> dict:
    session = await connect(client, base, PATH_SINK)
    # One period longer than a block, so that any phase's slice of a block-sized chunk is in it.
    expected = memoryview(pattern(0, BLOCK + 251))
    start = time.monotonic()
    stream = await session.create_bidirectional_stream()
    await stream.write(data=bytes([CMD_DOWNLOAD]) + struct.pack(">Q", n), end_stream=True)
    total = 0
    while True:
        chunk = await stream.read()
        if not chunk:
            break
        view = memoryview(chunk)
        pos = 0
        while pos < len(view):
            k = min(len(view) - pos, BLOCK)
            phase = (total + pos) % 251
            if view[pos : pos + k] != expected[phase : phase + k]:
                raise Fail(f"received bytes differ from the pattern near offset {total + pos}")
            pos += k
        total += len(view)
    seconds = time.monotonic() - start
    if total != n:
        raise Fail(f"received {total} bytes, asked for {n}")
    await close_session(session)
    return {"bytes": n, "seconds": seconds}


async def streams(client, base: str, count: int, size: int, concurrency: int) -> dict:
    session = await connect(client, base, PATH_ECHO)
    payload = pattern(0, size)
    next_index = 0

    async def one_stream() -> None:
        stream = await session.create_bidirectional_stream()

        async def writer() -> None:
            await stream.write(data=payload, end_stream=True)

        write_task = asyncio.create_task(writer())
        try:
            echo = await read_to_end(stream)
        finally:
            await write_task
        if echo != payload:
            raise Fail(f"echo of {len(echo)} bytes differs from the {size} bytes sent")

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            next_index += 1
            await one_stream()

    start = time.monotonic()
    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, min(concurrency, count))):
            group.create_task(worker())
    seconds = time.monotonic() - start
    await close_session(session)
    return {"count": count, "size": size, "seconds": seconds}


async def datagrams(client, base: str, size: int, duration: float) -> dict:
    from pywebtransport import DatagramError

    session = await connect(client, base, PATH_SINK)
    payload = pattern(0, size)
    sent = 0
    refused: DatagramError | None = None
    start = time.monotonic()
    deadline = start + duration

    async def send() -> None:
        nonlocal sent, refused
        try:
            await session.send_datagram(data=payload)
            sent += 1
        except DatagramError as e:
            # A full queue or a datagram too large for the path: counted as nothing.
            refused = e

    # Every send is a request to pywebtransport's core that completes on a later turn of the event
    # loop: keeping several in flight lets the core take datagrams back to back.
    in_flight: set[asyncio.Task] = set()
    while time.monotonic() < deadline:
        while len(in_flight) < DATAGRAM_WINDOW:
            in_flight.add(asyncio.create_task(send()))
        _, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        if sent == 0 and refused is not None and "exceeded" in str(refused):
            raise Fail(f"pywebtransport refuses datagrams of {size} bytes: {refused!r}")
    if in_flight:
        await asyncio.wait(in_flight)
    seconds = time.monotonic() - start
    await asyncio.sleep(0.5)
    stream = await session.create_bidirectional_stream()
    await stream.write(data=bytes([CMD_COUNT]), end_stream=True)
    reply = await read_to_end(stream)
    if len(reply) != 16:
        raise Fail(f"count reply of {len(reply)} bytes, want 16")
    received, _ = struct.unpack(">QQ", reply)
    await close_session(session)
    return {"size": size, "seconds": seconds, "sent": sent, "wire": None, "received": received}


async def latency(client, base: str, count: int, size: int) -> dict:
    session = await connect(client, base, PATH_ECHO)
    filler = pattern(0, size)
    tag = min(size, 8)
    samples = []
    lost = 0
    for seq in range(count):
        # The sequence number tells a late echo from the one awaited.
        payload = seq.to_bytes(8, "big")[8 - tag :] + filler[tag:]
        start = time.monotonic()
        await session.send_datagram(data=payload)
        deadline = start + 1.0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                lost += 1
                break
            try:
                echo = await asyncio.wait_for(session.read_datagram(), timeout=left)
            except asyncio.TimeoutError:
                lost += 1
                break
            if echo == payload:
                samples.append(time.monotonic() - start)
                break
    await close_session(session)
    samples.sort()
    return {
        "count": count,
        "lost": lost,
        "p50_us": percentile_us(samples, 50),
        "p99_us": percentile_us(samples, 99),
        "mean_us": sum(samples) / len(samples) * 1e6 if samples else None,
    }


def percentile_us(sorted_samples: list[float], p: float) -> float | None:
    """Nearest-rank percentile in microseconds (None without samples)."""
    if not sorted_samples:
        return None
    rank = max(1, min(len(sorted_samples), math.ceil(p / 100 * len(sorted_samples))))
    return sorted_samples[rank - 1] * 1e6


async def establish(client, base: str, count: int, concurrency: int, keep: bool) -> tuple[list, list[float]]:
    """Establishes `count` sessions to /echo, each on its own connection, `concurrency` at a time."""
    sessions = []
    times = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            next_index += 1
            start = time.monotonic()
            session = await connect(client, base, PATH_ECHO)
            times.append(time.monotonic() - start)
            if keep:
                sessions.append(session)
            else:
                await close_session(session)

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, min(concurrency, count))):
            group.create_task(worker())
    return sessions, times


async def handshakes(client, base: str, count: int, concurrency: int) -> dict:
    start = time.monotonic()
    _, times = await establish(client, base, count, concurrency, keep=False)
    seconds = time.monotonic() - start
    times.sort()
    return {
        "count": count,
        "seconds": seconds,
        "p50_us": percentile_us(times, 50),
        "p99_us": percentile_us(times, 99),
    }


async def idle(client, base: str, count: int, concurrency: int) -> dict:
    start = time.monotonic()
    sessions, _ = await establish(client, base, count, concurrency, keep=True)
    seconds = time.monotonic() - start
    sys.stdout.write(f"IDLE {len(sessions)}\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await asyncio.gather(*(close_session(s) for s in sessions))
    return {"count": count, "seconds": seconds}


async def client_main(args) -> int:
    from pywebtransport import ClientConfig, WebTransportClient

    parsed = urllib.parse.urlsplit(args.url)
    if parsed.scheme != "https" or not parsed.hostname:
        raise Fail(f"--url must be https://HOST:PORT, got {args.url!r}")
    base = f"https://{parsed.netloc}"
    config = ClientConfig(
        ca_certs=args.ca,
        verify_mode=ssl.CERT_REQUIRED,
        connect_timeout=30.0,
        **common_config(),
    )
    client = WebTransportClient(config=config)
    w = args.workload
    try:
        if w == "bulk-up":
            result = await bulk_up(client, base, args.bytes)
        elif w == "bulk-down":
            result = await bulk_down(client, base, args.bytes)
        elif w == "streams":
            result = await streams(client, base, args.count or 1000, args.size or 65536, args.concurrency or 100)
        elif w == "datagrams":
            result = await datagrams(client, base, args.size or 64, args.seconds)
        elif w == "latency":
            result = await latency(client, base, args.count or 10000, args.size or 64)
        elif w == "handshakes":
            result = await handshakes(client, base, args.count or 200, args.concurrency or 1)
        else:
            result = await idle(client, base, args.count or 1000, args.concurrency or 50)
    finally:
        try:
            await asyncio.wait_for(client.close(), timeout=5)
        except Exception as e:
            log.debug("client close: %r", e)
    result["cpu_seconds"] = cpu_seconds()
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    sub = parser.add_subparsers(dest="role", required=True)
    srv = sub.add_parser("server", help="serve /echo and /sink")
    srv.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: pick a free one)")
    srv.add_argument("--cert", required=True, help="certificate chain (PEM)")
    srv.add_argument("--key", required=True, help="private key (PEM)")
    cli = sub.add_parser("client", help="run one workload, print one JSON line")
    cli.add_argument("--url", required=True, help="https://HOST:PORT")
    cli.add_argument("--ca", required=True, help="certificate(s) to trust (PEM)")
    cli.add_argument(
        "--workload",
        required=True,
        choices=["bulk-up", "bulk-down", "streams", "datagrams", "latency", "handshakes", "idle"],
    )
    cli.add_argument("--bytes", type=int, default=1 << 30)
    cli.add_argument("--count", type=int, help="default per workload: 1000, 10000, 200 or 1000")
    cli.add_argument("--size", type=int, help="default per workload: 65536 or 64")
    cli.add_argument("--concurrency", type=int, help="default per workload: 100, 1 or 50")
    cli.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="peer.py %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("pywebtransport").setLevel(logging.ERROR)
    paths = [args.cert, args.key] if args.role == "server" else [args.ca]
    for path in paths:
        if not os.path.isfile(path):
            parser.error(f"no such file: {path}")
    try:
        if args.role == "server":
            return asyncio.run(server_main(args))
        return asyncio.run(client_main(args))
    except Fail as e:
        print(f"peer.py: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130 if args.role == "client" else 0
    except BaseException as e:
        if isinstance(e, BaseExceptionGroup):
            fails = e.subgroup(Fail)
            if fails is not None:
                print(f"peer.py: {fails.exceptions[0]}", file=sys.stderr)
                return 1
        print(f"peer.py: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
