#!/usr/bin/env python3
"""A pywebtransport (0.21) client written against the seed's StreamingServer, run against
Tern's streaming_server by examples/tests/streaming.rs.

Usage: streaming_seed_client.py URL    (the server's certificate is not verified: pywebtransport cannot pin a hash)

Prints "ok NAME" or "FAIL NAME: WHY" per check and exits 0 only if all passed.
"""

import asyncio
import json
import ssl
import sys

from pywebtransport import ClientConfig, WebTransportClient

CHECKS = ["subscribe", "data", "status", "unsubscribe", "upload-one-read", "upload-read-all", "stream-transport"]


async def control(session, message):
    """The seed's control channel: a JSON datagram out, the next non-data datagram back."""
    await session.send_datagram(data=json.dumps(message).encode())
    while True:
        reply = json.loads((await asyncio.wait_for(session.read_datagram(), 5)).decode())
        if reply.get("type") != "data":
            return reply


async def run(url, results):
    client = WebTransportClient(config=ClientConfig(connect_timeout=8.0, verify_mode=ssl.CERT_NONE))
    async with client:
        session = await client.connect(url=url)

        reply = await control(session, {"action": "subscribe", "stream_type": "default"})
        results["subscribe"] = reply.get("type") == "subscribed" and reply.get("stream_type") == "default" \
            and isinstance(reply.get("timestamp"), float) or f"reply {reply}"

        seqs = []
        while len(seqs) < 10:
            m = json.loads((await asyncio.wait_for(session.read_datagram(), 5)).decode())
            if m.get("type") == "data":
                if len(m["values"]) != 10 or not all(0 <= v <= 100 for v in m["values"]):
                    results["data"] = f"values {m['values']}"
                    break
                seqs.append(m["sequence"])
        if "data" not in results:
            ok = all(b == a + 1 for a, b in zip(seqs, seqs[1:]))
            results["data"] = ok or f"sequences {seqs}"

        reply = await control(session, {"action": "get_status"})
        results["status"] = (reply.get("type") == "status" and reply.get("subscribers") == 1
                             and reply.get("streaming") is True) or f"reply {reply}"

        reply = await control(session, {"action": "unsubscribe"})
        results["unsubscribe"] = reply.get("type") == "unsubscribed" or f"reply {reply}"

        # The seed's handle_data_stream: one read() on the server; this client writes without closing.
        stream = await session.create_bidirectional_stream()
        await stream.write(data=b"x" * 3000)
        reply = json.loads(await asyncio.wait_for(stream.read(), 5))
        results["upload-one-read"] = reply == {"status": "received", "bytes": 3000} or f"reply {reply}"

        stream = await session.create_bidirectional_stream()
        await stream.write_all(data=b"y" * 100000, end_stream=True)
        reply = json.loads(await asyncio.wait_for(stream.read_all(), 5))
        results["upload-read-all"] = reply == {"status": "received", "bytes": 100000} or f"reply {reply}"

        # Tern's addition: newline-delimited JSON on a server-opened stream, finished on unsubscribe.
        reply = await control(session, {"action": "subscribe", "stream_type": "a", "transport": "stream"})
        async for stream in session.incoming_unidirectional_streams():
            buf, seqs = b"", []
            while len(seqs) < 10:
                buf += await asyncio.wait_for(stream.read(), 5)
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    seqs.append(json.loads(line)["sequence"])
            await control(session, {"action": "unsubscribe", "stream_type": "a"})
            rest = buf + await asyncio.wait_for(stream.read_all(), 5)
            seqs += [json.loads(line)["sequence"] for line in rest.split(b"\n") if line]
            ok = rest.endswith(b"\n") or rest == b""
            ok = ok and all(b == a + 1 for a, b in zip(seqs, seqs[1:]))
            results["stream-transport"] = ok or f"sequences {seqs}, tail {rest[-40:]!r}"
            break
        await session.close()


def main():
    results = {}
    try:
        asyncio.run(asyncio.wait_for(run(sys.argv[1], results), 30))
    except Exception as e:  # noqa: BLE001 - every failure becomes a FAIL line
        for name in CHECKS:
            results.setdefault(name, f"not reached: {e!r}")
    failed = False
    for name in CHECKS:
        r = results.get(name, "not run")
        if r is True:
            print(f"ok {name}")
        else:
            failed = True
            print(f"FAIL {name}: {r}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
