"""Attacks the HTTP/2 ecosystem has met, each against its bound in
proxy/runtime/h2_connection.cpp, while a well-behaved client on another
connection keeps its WebSocket working: rapid reset (CVE-2023-44487),
CONTINUATION floods, HPACK bombs, SETTINGS and PING floods, zero-window
stalls, too many concurrent streams."""

import os
import socket
import struct
import time

import hpack

from harness import (HOST, OP_TEXT, Backend, check, check_eq, main, sanitizer_build, test, wait_until)

# ASan's quarantine keeps freed memory resident: RSS bounds are looser there.
RSS_SLACK = 10 if sanitizer_build() else 1
from h2client import PREFACE, H2Client
from http_backend import HttpBackend
from tlsutil import render_toml



def config(backends, limits=None):
    return render_toml({
        "server": {"workers": 1, "max_connections": 100000, "drain_timeout": "1s"},
        "log": {"access": "@TMP@/access.log", "format": "json", "error": "@TMP@/error.log", "level": "info"},
        "listener": [{"listen": f"{HOST}:@PORT@", "http2": True}],
        "timeouts": {"handshake": "5s", "connect": "2s", "idle": "5m"},
        "heartbeat": {"interval": "0s", "timeout": "10s", "peers": "client"},
        "limits": {"max_header_bytes": 16384, "buffer_bytes": 262144, **(limits or {})},
        "route": [{"path_prefix": "/", "pool": "main"}],
        "pool": [{"name": "main", "hash": "ip", "algorithm": "ring",
                  "backend": [{"address": b.address} for b in backends]}],
    })


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


SETTINGS, PING, HEADERS, CONTINUATION, RST_STREAM = 4, 6, 1, 9, 3


class Bystander:
    """A well-behaved client with an open WebSocket on its own connection."""

    def __init__(self, port):
        self.client = H2Client(port)
        self.sid = self.client.websocket("/bystander")
        self.n = 0

    def still_works(self, what):
        from harness import decode_frame, encode_frame
        self.n += 1
        text = f"ping {self.n}".encode()
        self.client.send_data(self.sid, encode_frame(OP_TEXT, text, mask=True))
        s = self.client.streams[self.sid]
        self.client.wait(lambda: decode_frame(bytes(s.data))[0] is not None, 5, f"echo ({what})")
        f, used = decode_frame(bytes(s.data))
        del s.data[:used]
        check_eq(f.payload, text, f"bystander's echo {what}")


def raw_connection(port, rcvbuf=None):
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect((HOST, port))
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
    return sock


def ends_soon(sock, timeout=5.0):
    """True when the server closes <sock> (after a GOAWAY or not) within
    <timeout>; what it sends meanwhile is read and dropped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if not sock.recv(1 << 20):
                return True
        except socket.timeout:
            return False
        except OSError:
            return True
    return False


@test(timeout=40)
def rapid_reset_goaway():
    """CVE-2023-44487: streams opened and reset at once. After the burst
    allowance (200 resets, then 50 a second) the connection gets GOAWAY;
    another client is unaffected."""
    with Backend("echo", id="b1") as b, Wsgate_(config([b])) as gw:
        by = Bystander(gw.port)
        by.still_works("before")
        c = H2Client(gw.port)
        c.wait(lambda: c.remote_settings_seen, what="SETTINGS")
        for _ in range(600):
            if c.closed or c.goaway is not None:
                break
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":path", "/"),
                                      (":authority", "x")], end_stream=True)
            c.conn.reset_stream(sid)
            try:
                c._flush()
            except OSError:
                break
            c.pump(0)
        wait_until(lambda: not c.pump(0.1) or c.goaway is not None, 5)
        # nghttp2 1.52 (Debian's backport of the rate limit) says INTERNAL_ERROR.
        check(c.goaway in (2, 11), f"GOAWAY after a reset flood: {c.goaway} (closed={c.closed})")
        by.still_works("after")
        return f"GOAWAY {c.goaway}"


@test(timeout=40)
def continuation_flood_ends_connection():
    """A header block that never ends (CONTINUATION after CONTINUATION)
    ends the connection after 8 CONTINUATIONs."""
    with Backend("echo", id="b1") as b, Wsgate_(config([b])) as gw:
        by = Bystander(gw.port)
        sock = raw_connection(gw.port)
        block = hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "x")])
        data = frame(HEADERS, 0, 1, block)  # no END_HEADERS
        for i in range(200):
            data += frame(CONTINUATION, 0, 1, hpack.Encoder().encode([(f"x-{i}", "y" * 10)]))
        try:
            sock.sendall(data)
        except OSError:
            pass
        check(ends_soon(sock), "connection still open after a CONTINUATION flood")
        check(gw.wait_error_log(r"h2 connection from .*CONTINUATION|h2 connection from .*: ", timeout=3),
              "no error logged for the CONTINUATION flood")
        by.still_works("after")


@test(timeout=40)
def hpack_bomb_resets_the_stream():
    """A small header block referencing a large dynamic-table entry over and
    over decodes to far more than limits.max_header_bytes: that stream is
    reset, the connection and its other streams go on."""
    with HttpBackend("hb") as hb, Wsgate_(config([hb])) as gw:
        c = H2Client(gw.port)
        big = "b" * 3000
        s = c.response(c.request("GET", "/id", headers=[("x-big", big)]))
        check_eq((s.headers or {}).get(":status"), "200", "a 3 KB header is fine")
        sid = c.conn.get_next_available_stream_id()
        c.conn.config.validate_outbound_headers = False
        c.streams[sid] = type(s)(sid)
        before = c.conn.data_to_send()  # nothing pending
        c.sock.sendall(before)
        c.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":path", "/id"),
                                  (":authority", "localhost")] + [("x-big", big)] * 60, end_stream=True)
        wire = c.conn.data_to_send()
        check(len(wire) < 2000, f"the bomb's header block is small ({len(wire)} bytes on the wire)")
        c.sock.sendall(wire)
        r = c.response(sid)
        check(r.reset is not None, f"bomb stream not reset: {r.headers}")
        s = c.response(c.request("GET", "/id"))
        check_eq(bytes(s.data), b"id:hb", "the connection still serves")


@test(timeout=40)
def settings_and_ping_floods_end_the_connection():
    """SETTINGS and PING frames from a client that never reads their ACKs:
    at most 1000 ACKs are queued, then GOAWAY and the connection ends;
    memory stays bounded and another client is unaffected."""
    with Backend("echo", id="b1") as b, Wsgate_(config([b])) as gw:
        by = Bystander(gw.port)
        baseline = gw.rss_kib()
        sock = raw_connection(gw.port, rcvbuf=4096)
        flood = (frame(PING, 0, 0, b"12345678") + frame(SETTINGS, 0, 0)) * 20000
        ended = False
        for _ in range(40):
            try:
                sock.sendall(flood)
            except OSError:
                ended = True
                break
        peak = gw.rss_kib()
        how = "send failed" if ended else "closed by the server"
        check(ended or ends_soon(sock, 5), "connection still open after the flood")
        check(gw.wait_error_log(r"h2 connection from .*: (Flooding was detected|.*flood)", timeout=3),
              "no flood error in the error log")
        check(peak - baseline < 32 * 1024 * RSS_SLACK, f"RSS grew by {(peak - baseline) // 1024} MiB during the flood")
        by.still_works("after")
        return f"{how}, RSS +{(peak - baseline) // 1024} MiB"


@test(timeout=40)
def zero_window_stall_is_bounded():
    """A client that grants no window (SETTINGS_INITIAL_WINDOW_SIZE 0) to a
    flooding back end: wsgate holds at most limits.buffer_bytes for it and
    the back end is paused; another client's session is unaffected."""
    with Backend("flood", id="f", count=3000, size=16384) as fb, Backend("echo", id="e") as eb, \
            Wsgate_(render_toml({
                "server": {"workers": 1, "drain_timeout": "1s"},
                "log": {"access": "@TMP@/access.log", "format": "json", "error": "@TMP@/error.log"},
                "listener": [{"listen": f"{HOST}:@PORT@", "http2": True}],
                "route": [{"path_prefix": "/flood", "pool": "flood"}, {"path_prefix": "/", "pool": "main"}],
                "pool": [{"name": "main", "hash": "ip", "backend": [{"address": eb.address}]},
                         {"name": "flood", "hash": "ip", "backend": [{"address": fb.address}]}]})) as gw:
        import h2.settings
        by = Bystander(gw.port)
        baseline = gw.rss_kib()
        c = H2Client(gw.port)
        c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        c._flush()
        sid = c.websocket("/flood")
        check_eq(c.streams[sid].headers.get(":status"), "200", "flood stream open")
        peak = baseline
        for _ in range(8):
            time.sleep(0.25)
            c.pump(0)
            peak = max(peak, gw.rss_kib())
        check_eq(len(c.streams[sid].data), 0, "bytes sent beyond a zero window")
        check(peak - baseline < 16 * 1024 * RSS_SLACK, f"RSS grew by {(peak - baseline) // 1024} MiB for a zero-window stream")
        by.still_works("during the stall")
        c.close()
        return f"RSS +{(peak - baseline) // 1024} MiB while stalled"


@test(timeout=40)
def too_many_streams_refused():
    """Past limits.h2_max_concurrent_streams a new stream is refused
    (REFUSED_STREAM); the open ones complete."""
    with HttpBackend("hb") as hb, Wsgate_(config([hb], limits={"h2_max_concurrent_streams": 3})) as gw:
        c = H2Client(gw.port)
        # Sent before the server's SETTINGS arrive, so that the client
        # library does not hold the fourth back itself.
        sids = [c.request("GET", "/slow?ms=400") for _ in range(4)]
        for sid in sids[:3]:
            check_eq(bytes(c.response(sid).data), b"slow", f"stream {sid}")
        check_eq(c.response(sids[3]).reset, 7, "REFUSED_STREAM for the fourth stream")


# The harness's Wsgate, named apart from this file's helpers.
from harness import Wsgate as Wsgate_  # noqa: E402

main()
