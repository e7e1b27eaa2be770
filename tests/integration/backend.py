"""Test WebSocket back end for the integration tests.

Run with Debian's /usr/bin/python3 (it has python3-websockets 10.4). Prints
`listening PORT` on stdout once the server socket is bound; the harness waits
for that line. Modes:

  echo    echo every message; text commands: "whoami" -> "id:NAME",
          "headers" -> JSON object of the request headers it saw (lower-case
          names, repeated headers joined with ", "), "path" -> the request
          path, "close:CODE" -> close with CODE (reason "by backend").
  flood   after the handshake send --count binary messages of --size bytes
          as fast as the connection accepts them (8-byte big-endian sequence
          number, then the byte seq % 251 repeated), then the text "done";
          then wait for the peer to close.
  silent  complete the handshake, then stop reading the socket: never
          answers a frame (not even a ping), never pings.

With --health-path PATH a plain GET of PATH (no Upgrade header) is answered
200 "ok" instead of a WebSocket handshake, for HTTP health probes.

With --events FILE every connection appends JSON lines: {"event": "open",
"path": ...} and, when it ends, {"event": "close", "code": N, "reason": S}
where code/reason are what the peer's close frame carried (1006 if none).
With --tls-cert PEM --tls-key PEM the server speaks wss:// (TLS 1.2+).
The process exits when its parent dies, so a killed test leaks nothing.
"""

import argparse
import asyncio
import http
import json
import os
import ssl
import struct
import sys

import websockets


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--id", default="backend")
    p.add_argument("--mode", choices=("echo", "flood", "silent"), default="echo")
    p.add_argument("--count", type=int, default=1000, help="flood: messages")
    p.add_argument("--size", type=int, default=1024, help="flood: bytes each")
    p.add_argument("--subprotocols", default="", help="comma-separated")
    p.add_argument("--events", default="", help="JSON-lines event file")
    p.add_argument("--health-path", default="", help="plain GET here -> 200")
    p.add_argument("--tls-cert", default="", help="serve wss:// with this PEM chain")
    p.add_argument("--tls-key", default="", help="private key of --tls-cert")
    return p.parse_args()


class Events:
    def __init__(self, path):
        self.file_ = open(path, "a", buffering=1) if path else None

    def write(self, **record):
        if self.file_:
            self.file_.write(json.dumps(record) + "\n")


def headers_dict(headers):
    out = {}
    for name, value in headers.raw_items():
        key = name.lower()
        out[key] = out[key] + ", " + value if key in out else value
    return out


def flood_message(seq, size):
    return struct.pack(">Q", seq) + bytes([seq % 251]) * max(0, size - 8)


async def serve_echo(ws, args):
    async for message in ws:
        if message == "whoami":
            await ws.send("id:" + args.id)
        elif message == "headers":
            await ws.send(json.dumps(headers_dict(ws.request_headers)))
        elif message == "path":
            await ws.send(ws.path)
        elif isinstance(message, str) and message.startswith("close:"):
            await ws.close(int(message[6:]), "by backend")
            return
        else:
            await ws.send(message)


async def serve_flood(ws, args):
    for seq in range(args.count):
        await ws.send(flood_message(seq, args.size))
    await ws.send("done")
    await ws.wait_closed()


async def serve_silent(ws, args):
    ws.transport.pause_reading()
    await asyncio.Event().wait()


async def watch_parent():
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    os._exit(0)


async def main():
    args = parse_args()
    events = Events(args.events)
    modes = {"echo": serve_echo, "flood": serve_flood, "silent": serve_silent}

    async def handler(ws):
        events.write(event="open", path=ws.path)
        try:
            await modes[args.mode](ws, args)
        except websockets.ConnectionClosed:
            pass
        finally:
            if args.mode != "silent":
                await ws.wait_closed()
                events.write(event="close", code=ws.close_code,
                             reason=ws.close_reason)

    async def process_request(path, request_headers):
        if (args.health_path and path == args.health_path
                and "upgrade" not in request_headers):
            return http.HTTPStatus.OK, [("Content-Type", "text/plain")], b"ok\n"
        return None

    subprotocols = [s for s in args.subprotocols.split(",") if s] or None
    tls = None
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key or None)
    server = await websockets.serve(
        handler, args.host, args.port, ping_interval=None, max_size=None,
        subprotocols=subprotocols, close_timeout=2, process_request=process_request, ssl=tls,
        compression=None if args.mode == "flood" else "deflate")
    port = server.sockets[0].getsockname()[1]
    print("listening", port, flush=True)
    await watch_parent()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
