"""Load helpers for the memory and soak tests, in separate processes so that
each stays under the per-process descriptor cap.

`push` back end (run as a script): a selectors-based raw WebSocket server
that, after the handshake, sends binary frames of --frame bytes to every
connection as fast as the connection takes them, up to --cap bytes per
connection. Prints `listening PORT`, then every 0.5 s writes to --status a
JSON object: connections open, stalled (send hit EAGAIN at least once:
the whole path to the client filled up), capped (reached --cap without
ever stalling), and bytes sent in total. Exits when its
parent dies.
"""

import argparse
import base64
import hashlib
import json
import os
import selectors
import socket
import struct
import sys
import time

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


class Conn:
    __slots__ = ("sock", "head", "out", "sent", "stalled", "pushing")

    def __init__(self, sock):
        self.sock, self.head, self.out = sock, b"", b""
        self.sent, self.stalled, self.pushing = 0, False, False


def serve_push(args):
    frame = bytes([0x82, 126]) + struct.pack(">H", args.frame) + bytes(range(256)) * (args.frame // 256) \
        + bytes(args.frame % 256)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.setblocking(False)
    print("listening", listener.getsockname()[1], flush=True)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    conns = set()
    capped_total = 0
    sent_total = 0
    parent = os.getppid()
    next_status = 0.0

    def close(c):
        sel.unregister(c.sock)
        c.sock.close()
        conns.discard(c)

    while os.getppid() == parent:
        for key, events in sel.select(0.25):
            if key.data is None:
                while True:
                    try:
                        sock, _ = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, args.sndbuf)
                    c = Conn(sock)
                    conns.add(c)
                    sel.register(sock, selectors.EVENT_READ, c)
                continue
            c = key.data
            if events & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError:
                    data = b""
                if data == b"":
                    close(c)
                    continue
                if data and not c.pushing:
                    c.head += data
                    if b"\r\n\r\n" in c.head:
                        key_line = [l for l in c.head.split(b"\r\n")
                                    if l.lower().startswith(b"sec-websocket-key:")]
                        ws_key = key_line[0].split(b":", 1)[1].strip() if key_line else b""
                        c.out = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " +
                                 accept_key(ws_key) + b"\r\n\r\n")
                        c.pushing = True
                        sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
            if events & selectors.EVENT_WRITE and c in conns:
                while True:
                    if not c.out:
                        if c.sent >= args.cap:
                            if not c.stalled:
                                capped_total += 1
                            sel.modify(c.sock, selectors.EVENT_READ, c)
                            break
                        c.out = frame
                    try:
                        n = c.sock.send(c.out)
                    except (BlockingIOError, InterruptedError):
                        c.stalled = True
                        break
                    except OSError:
                        close(c)
                        break
                    c.out = c.out[n:]
                    c.sent += n
                    sent_total += n
        now = time.monotonic()
        if args.status and now >= next_status:
            next_status = now + 0.5
            status = {"open": len(conns), "stalled": sum(1 for c in conns if c.stalled),
                      "capped": capped_total, "sent": sent_total}
            tmp = args.status + ".tmp"
            with open(tmp, "w") as f:
                json.dump(status, f)
            os.replace(tmp, args.status)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--frame", type=int, default=16384)
    p.add_argument("--cap", type=int, default=4 << 20)
    p.add_argument("--sndbuf", type=int, default=8192)
    p.add_argument("--status", default="")
    serve_push(p.parse_args())


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
