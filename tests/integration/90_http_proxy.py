"""Plain HTTP/1.1 proxying on the WebSocket listener: keep-alive on both
sides, pipelining, 100-continue, body-less responses, chunked both ways,
large streamed bodies with backpressure, request-smuggling attempts,
hop-by-hop removal, X-Forwarded-*, sticky cookies, an upgrade after plain
requests on one connection, timeouts, the access log and the metrics.

These drive proxy/runtime/http_exchange.cpp (one request and its response)
and proxy/runtime/session_http.cpp (the session's hand-over to and from
the exchange); their pure parts (forward.cpp, chunked.cpp) have unit tests."""

import hashlib
import json
import os
import socket
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (HOST, HarnessError, OP_TEXT, RawWs, Wsgate, check, check_eq, free_port, main,  # noqa: E402
                     new_key, parse_head, raw_exchange, test, upgrade_head, wait_until, FrameSocket, read_head,
                     accept_key)
from http_backend import HttpBackend, pattern_bytes  # noqa: E402


def two_ports():
    """Two distinct free ports (free_port() may hand out the same one twice)."""
    first = free_port()
    for _ in range(20):
        second = free_port()
        if second != first:
            return first, second
    raise HarnessError("no second free port")


def config(backends, pool_extra="", timeouts="", admin_port=None, limits="", hash="ip", port="@PORT@"):
    """TOML for one pool "main" over <backends>, hashed on <hash>. The
    [admin] table comes last: Wsgate reads the port of the first listen."""
    admin = f'[admin]\nlisten = "{HOST}:{admin_port}"\n' if admin_port else ""
    pool_backends = "".join(f'[[pool.backend]]\naddress = "{b.address}"\n' for b in backends)
    return f"""
[server]
workers = 1
drain_timeout = "1s"
[log]
access = "@TMP@/access.log"
error = "@TMP@/error.log"
[[listener]]
listen = "{HOST}:{port}"
[timeouts]
handshake = "5s"
connect = "2s"
{timeouts}
[heartbeat]
interval = "0s"
[limits]
buffer_bytes = 262144
{limits}
[[pool]]
name = "main"
hash = "{hash}"
{pool_extra}
{pool_backends}
{admin}"""


class Client:
    """One keep-alive client connection that reads responses by their framing."""

    def __init__(self, port, timeout=10.0, source=None, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind(source)
        self.sock.connect((HOST, port))
        self.buf = b""
        self.timeout = timeout

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(262144)
        if not data:
            raise EOFError("connection closed by wsgate")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exactly(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def head(self):
        """(status, headers, raw head) of the next response head."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n\r\n") + 4
        raw, self.buf = self.buf[:end], self.buf[end:]
        status_line, headers = parse_head(raw)
        return int(status_line[1]), headers, raw

    def response(self, head_request=False, sink=None):
        """(status, headers, body, raw head) of the next final response; the
        body is read per its framing (and passed to <sink> instead of kept
        when given)."""
        while True:
            status, headers, raw = self.head()
            if status >= 200:
                break
        parts = []
        sink = sink or parts.append
        if head_request or status in (204, 304):
            pass
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                sink(self._exactly(size))
                check_eq(self._exactly(2), b"\r\n", "CRLF after chunk data")
        elif "content-length" in headers:
            left = int(headers["content-length"])
            while left:
                if not self.buf:
                    self._fill()
                piece, self.buf = self.buf[:left], self.buf[left:]
                left -= len(piece)
                sink(piece)
        else:
            while True:
                try:
                    self._fill()
                except EOFError:
                    break
            sink(self.buf)
            self.buf = b""
        return status, headers, b"".join(parts), raw

    def closed(self, timeout=3.0):
        """True once wsgate closes the connection within <timeout>."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True


def get(path, host="example.test", extra=""):
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def metric(admin_port, name):
    text = urllib.request.urlopen(f"http://{HOST}:{admin_port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not found")


@test
def keepalive_reused_on_both_sides():
    port, admin = two_ports()
    with HttpBackend("b1") as b, Wsgate(config([b], admin_port=admin, port=port)) as gw:
        c = Client(gw.port)
        for i in range(5):
            c.send(get(f"/id?i={i}"))
            status, headers, body, _ = c.response()
            check_eq((status, body), (200, b"id:b1"), f"response {i}")
            check("connection" not in headers, f"Connection header on a kept-alive response: {headers}")
        c.close()
        # A second client: the back-end connection parked by the first is reused.
        c = Client(gw.port)
        for i in range(3):
            c.send(get("/id"))
            check_eq(c.response()[0], 200, "second client")
        c.close()
        check_eq(b.connections, 1, "back-end connections for 8 requests over 2 client connections")
        check_eq(len(b.requests), 8, "requests at the back end")
        check_eq(metric(admin, 'wsgate_upstream_connections_total{kind="reused"}'), 7.0, "reused (metric)")
        check_eq(metric(admin, 'wsgate_upstream_connections_total{kind="new"}'), 1.0, "new (metric)")
        check_eq(metric(admin, 'wsgate_http_requests_total{class="2xx"}'), 8.0, "2xx (metric)")
        entries = gw.access_log_entries(wait_for=8)
        check_eq(len(entries), 8, "one access-log line per request")
        for e in entries:
            check_eq((e["status"], e["backend"], e["pool"], e["method"]), (200, b.address, "main", "GET"), "entry")
            check("messages_in" not in e and "messages_out" not in e, f"messages_* in an HTTP line: {e}")
            check(len(e["request_id"]) == 32, f"request id {e['request_id']!r}")
        return "8 requests, 1 back-end connection"


@test
def reused_connection_closed_by_the_back_end_is_retried():
    with HttpBackend("b1") as b, Wsgate(config([b])) as gw:
        c = Client(gw.port)
        for body in (b"", b"payload"):
            c.send(get("/once"))
            check_eq(c.response()[2], b"once", "first request")
            # The parked connection is taken, and the back end drops it
            # unanswered: wsgate sends the request again on a new one.
            c.send(f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            status, _, got, _ = c.response()
            check_eq((status, got), (200, body), "request after the dropped reuse")
        check_eq(len(b.dropped), 2, "requests dropped by the back end")
        # The retry connection is parked and reused by the second /once.
        check_eq(b.connections, 3, "back-end connections")


@test
def pipelined_requests_answered_in_order():
    with HttpBackend("b1") as b, Wsgate(config([b])) as gw:
        c = Client(gw.port)
        # The first is slow at the back end, the others fast: order must hold.
        c.send(get("/slow?ms=300") + get("/id") + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nping"
               + get("/status/404"))
        bodies = [c.response()[2] for _ in range(4)]
        check_eq(bodies, [b"slow", b"id:b1", b"ping", b"status body\n"], "responses in request order")
        check_eq(b.connections, 1, "back-end connections")


@test
def expect_100_continue():
    with HttpBackend("b1") as b, Wsgate(config([b])) as gw:
        c = Client(gw.port)
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n")
        status, _, _ = c.head()
        check_eq(status, 100, "interim response before the body is sent")
        c.send(b"hello world")
        status, _, body, _ = c.response()
        check_eq((status, body), (200, b"hello world"), "final response")
        check_eq(b.requests[0].header("expect"), "100-continue", "Expect forwarded")
        # An HTTP/1.0 client never sees a 1xx.
        data = raw_exchange(gw.port, b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi")
        check(data.startswith(b"HTTP/1.1 200 "), f"HTTP/1.0 client got {data[:40]!r}")
        check(b" 100 " not in data.split(b"\r\n", 1)[0], "1xx to an HTTP/1.0 client")


@test
def responses_without_a_body():
    with HttpBackend("b1") as b, Wsgate(config([b])) as gw:
        c = Client(gw.port)
        c.send(b"HEAD /download?n=1234 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body, _ = c.response(head_request=True)
        check_eq((status, headers.get("content-length")), (200, "1234"), "HEAD keeps the length of the GET")
        for code in (204, 304):
            c.send(get(f"/status/{code}"))
            status, headers, body, _ = c.response()
            check_eq((status, body), (code, b""), f"status {code}")
        # The connection is still framed correctly: a last request works.
        c.send(get("/id"))
        check_eq(c.response()[2], b"id:b1", "request after body-less responses")
        check(c.buf == b"", f"stray bytes after the responses: {c.buf[:80]!r}")
        check_eq(b.connections, 1, "back-end connections")


@test
def chunked_both_ways():
    with HttpBackend("b1") as b, Wsgate(config([b])) as gw:
        c = Client(gw.port)
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4;name=\"v\"\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n")
        status, _, body, _ = c.response()
        check_eq((status, body), (200, b"Wikipedia in\r\n\r\nchunks."), "echoed chunked body")
        r = b.requests_to("/echo")[0]
        check_eq(r.framing, "chunked", "re-framed as chunked to the back end")
        check_eq(r.chunk_lines, [b"4", b"5", b"e", b"0"], "chunk-size lines re-encoded, extensions dropped")
        c.send(get("/chunked"))
        status, headers, body, _ = c.response()
        check_eq(headers.get("transfer-encoding"), "chunked", "chunked to an HTTP/1.1 client")
        check_eq(body, b"hello, chunked world", "chunked response body")
        check("trailer" not in headers, f"Trailer header relayed: {headers}")
        # An HTTP/1.0 client gets the body decoded and delimited by the close.
        data = raw_exchange(gw.port, b"GET /chunked HTTP/1.0\r\n\r\n")
        head, _, rest = data.partition(b"\r\n\r\n")
        check(b"chunked" not in head.lower(), f"chunked to an HTTP/1.0 client: {head!r}")
        check_eq(rest, b"hello, chunked world", "HTTP/1.0 body")
        # A close-delimited response is re-framed as chunked: the client connection stays.
        c.send(get("/close-delimited"))
        status, headers, body, _ = c.response()
        check_eq((headers.get("transfer-encoding"), body), ("chunked", b"until the end"), "close-delimited")
        c.send(get("/id"))
        check_eq(c.response()[2], b"id:b1", "client kept after a close-delimited response")


@test(timeout=120)
def large_bodies_streamed_with_bounded_memory():
    """20 MiB each way while the receiving side stalls for a second: what
    wsgate holds meanwhile is bounded by its buffers, not by the body. RSS is
    sampled during the stalls only (an ASan build's quarantine grows with
    the bytes moved, not with what is buffered)."""
    size = 20 * 1024 * 1024
    bound_kib = 12 * 1024  # well below the 20 MiB that would pile up without backpressure
    with HttpBackend("b1") as b, Wsgate(config([b])) as gw:
        base = gw.rss_kib()
        peak = [base]

        def sample_for(seconds):
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                peak[0] = max(peak[0], gw.rss_kib())
                time.sleep(0.05)

        c = Client(gw.port, timeout=60, rcvbuf=65536)
        # The back end waits a second before it reads: wsgate must stop
        # reading the client meanwhile (the client's sends block).
        c.send(f"POST /upload?delay=1000 HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
        sampler = threading.Thread(target=sample_for, args=(0.9,))
        sampler.start()
        block = pattern_bytes(1 << 20)
        for _ in range(size // len(block)):
            c.send(block)
        sampler.join()
        status, _, body, _ = c.response()
        expected = hashlib.sha256(block * (size // len(block))).hexdigest()
        check_eq((status, body.decode()), (200, f"bytes={size} sha256={expected}"), "upload received whole")
        upload_growth = peak[0] - base

        # Download, not read for a second: the back end must be held back.
        base = gw.rss_kib()
        peak = [base]
        c.send(get(f"/download?n={size}"))
        digest, got = hashlib.sha256(), [0]

        def sink(piece):
            if got[0] == 0:
                sample_for(1.0)
            digest.update(piece)
            got[0] += len(piece)
        status, _, _, _ = c.response(sink=sink)
        check_eq((status, got[0]), (200, size), "download size")
        check_eq(digest.hexdigest(), hashlib.sha256(pattern_bytes(size)).hexdigest(), "download content")
        download_growth = peak[0] - base
        check(upload_growth < bound_kib, f"RSS grew by {upload_growth} KiB while the back end did not read")
        check(download_growth < bound_kib, f"RSS grew by {download_growth} KiB while the client did not read")
        return f"RSS growth while stalled: upload {upload_growth} KiB, download {download_growth} KiB"


@test
def smuggling_attempts_rejected_before_the_back_end():
    attempts = {
        "CL+TE": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        "TE+CL": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        "double CL": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        "CL list": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\nabcde",
        "CL sign": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
        "TE not chunked last": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        "obs-fold": b"GET /id HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
        "chunk size hex prefix": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x4\r\nabcd\r\n0\r\n\r\n",
        "chunk size negative": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-4\r\nabcd\r\n0\r\n\r\n",
        "chunk size overflow": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"10000000000000004\r\nabcd\r\n0\r\n\r\n",
        "chunk size space": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4 \r\nabcd\r\n0\r\n\r\n",
        "chunk bare LF": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\nabcd\r\n0\r\n\r\n",
        "chunk bad extension": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4;a b\r\nabcd\r\n0\r\n\r\n",
        "chunk data too long": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n",
    }
    with HttpBackend("b1") as b, Wsgate(config([b])) as gw:
        for name, data in attempts.items():
            status_line = raw_exchange(gw.port, data).split(b"\r\n", 1)[0]
            check(status_line.startswith(b"HTTP/1.1 400 "), f"{name}: answered {status_line!r}")
        time.sleep(0.2)
        check_eq([r.target for r in b.requests], [], "requests that reached the back end")
        check_eq(b.connections, 0, "back-end connections")
        entries = gw.access_log_entries(wait_for=len(attempts))
        check_eq(sorted({e["status"] for e in entries}), [400], "logged statuses")
        return f"{len(attempts)} attempts"


@test
def hop_by_hop_removed_and_forwarded_headers_added():
    with HttpBackend("b1") as b, Wsgate(config([b])) as gw:
        c = Client(gw.port)
        c.send(b"GET /headers HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
               b"Keep-Alive: timeout=9\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Authorization: Basic eA==\r\n"
               b"Proxy-Connection: keep-alive\r\nX-Forwarded-For: 203.0.113.9\r\nX-Request-Id: req-42\r\n"
               b"Cookie: a=1\r\n\r\n")
        status, _, body, _ = c.response()
        seen = json.loads(body)
        for name in ("connection", "x-secret", "keep-alive", "te", "upgrade", "proxy-authorization",
                     "proxy-connection", "transfer-encoding"):
            check(name not in seen, f"{name} reached the back end: {seen}")
        check_eq(seen.get("x-forwarded-for"), "203.0.113.9, 127.0.0.1", "X-Forwarded-For")
        check_eq(seen.get("x-forwarded-proto"), "http", "X-Forwarded-Proto")
        check_eq(seen.get("x-forwarded-host"), "app.test", "X-Forwarded-Host")
        check_eq(seen.get("x-request-id"), "req-42", "X-Request-Id kept")
        check_eq((seen.get("host"), seen.get("cookie")), ("app.test", "a=1"), "end-to-end headers")
        c.send(get("/hop"))
        status, headers, body, raw = c.response()
        for name in ("x-internal", "keep-alive", "proxy-authenticate", "connection"):
            check(name not in headers, f"{name} relayed to the client: {raw!r}")
        check_eq(headers.get("x-public"), "yes", "end-to-end response header")
        c.send(get("/headers"))
        seen = json.loads(c.response()[2])
        check_eq(len(seen.get("x-request-id", "")), 32, "a generated X-Request-Id")
        entries = gw.access_log_entries(wait_for=3)
        check_eq(entries[0]["request_id"], "req-42", "request id in the access log")


@test
def sticky_cookie_set_once_and_honoured():
    with HttpBackend("b1") as b1, HttpBackend("b2") as b2, HttpBackend("b3") as b3, \
            Wsgate(config([b1, b2, b3], hash="header:X-Key", pool_extra='sticky_cookie = "SRV"')) as gw:
        c = Client(gw.port)
        c.send(get("/id", extra="X-Key: first\r\n"))
        status, headers, body, _ = c.response()
        cookie = headers.get("set-cookie", "")
        check(cookie.startswith("SRV=") and cookie.endswith("; Path=/; HttpOnly; SameSite=Lax"),
              f"Set-Cookie {cookie!r}")
        token = cookie.split(";", 1)[0].split("=", 1)[1]
        check(len(token) == 16 and "127" not in token, f"token {token!r} is not opaque")
        owner = body.decode()
        # With the cookie, keys that hash elsewhere stay on the owner, without a new cookie.
        moved_keys = 0
        for i in range(12):
            c.send(get("/id", extra=f"X-Key: k{i}\r\nCookie: other=1; SRV={token}\r\n"))
            status, headers, body, _ = c.response()
            check_eq(body.decode(), owner, f"request {i} with the cookie")
            check("set-cookie" not in headers, f"cookie set again: {headers}")
            probe = Client(gw.port)
            probe.send(get("/id", extra=f"X-Key: k{i}\r\n"))
            moved_keys += probe.response()[2].decode() != owner
            probe.close()
        check(moved_keys > 0, "no key hashed away from the owner: the test shows nothing")
        # A forged token is ignored: the hash decides and a fresh cookie is set.
        c.send(get("/id", extra="X-Key: first\r\nCookie: SRV=0123456789abcdef\r\n"))
        status, headers, body, _ = c.response()
        check_eq(body.decode(), owner, "forged cookie: the hash's choice")
        check_eq(headers.get("set-cookie"), cookie, "forged cookie replaced")
        # An upgrade carrying the cookie lands on the same back end.
        ws = RawWs.connect(gw.port, "/ws", extra=[("X-Key", "k3"), ("Cookie", f"SRV={token}")])
        frame = ws.recv_frame()
        check_eq(frame.payload.decode(), owner, "upgrade with the cookie")
        ws.close()
        return f"owner {owner}, {moved_keys}/12 keys hash elsewhere"


@test
def upgrade_after_plain_requests_on_one_connection():
    with HttpBackend("b1") as b, Wsgate(config([b])) as gw:
        c = Client(gw.port)
        for _ in range(2):
            c.send(get("/id"))
            check_eq(c.response()[2], b"id:b1", "plain request")
        key = new_key()
        c.send(upgrade_head("/ws", "example.test", key))
        status, headers, _ = c.head()
        check_eq((status, headers.get("sec-websocket-accept")), (101, accept_key(key)), "upgrade answered")
        ws = FrameSocket(c.sock, c.buf)
        check_eq(ws.recv_frame().payload, b"id:b1", "first frame from the back end")
        ws.send_text("echo me")
        check_eq(ws.recv_frame().payload, b"echo me", "echoed frame")
        ws.send_close(1000)
        ws.recv_close()
        entries = gw.access_log_entries(wait_for=3)
        check_eq([e["status"] for e in entries], [200, 200, 101], "access-log statuses")
        check("messages_in" in entries[2], "the tunnel's line has messages_*")


@test
def connection_close_semantics():
    with HttpBackend("b1") as b, Wsgate(config([b])) as gw:
        # The client asks to close: the answer says so and the connection ends.
        c = Client(gw.port)
        c.send(get("/id", extra="Connection: close\r\n"))
        status, headers, body, _ = c.response()
        check_eq(headers.get("connection"), "close", "Connection: close echoed")
        check(c.closed(), "connection left open after Connection: close")
        # The back end closes: the client connection stays, a new back-end connection follows.
        c = Client(gw.port)
        c.send(get("/conn-close"))
        status, headers, body, _ = c.response()
        check("connection" not in headers, f"back end's close leaked to the client: {headers}")
        c.send(get("/id"))
        check_eq(c.response()[2], b"id:b1", "next request after the back end closed")
        # An HTTP/1.0 client without keep-alive gets one response then the close.
        data = raw_exchange(gw.port, b"GET /id HTTP/1.0\r\n\r\n")
        check(data.endswith(b"id:b1"), f"HTTP/1.0 response {data!r}")
        # HTTP/1.0 with keep-alive stays open.
        c = Client(gw.port)
        c.send(b"GET /id HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body, _ = c.response()
        check_eq(headers.get("connection", "").lower(), "keep-alive", "HTTP/1.0 keep-alive answer")
        c.send(b"GET /id HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        check_eq(c.response()[2], b"id:b1", "second HTTP/1.0 request")
        # An early final response ends the client connection: its body was never read.
        c = Client(gw.port)
        c.send(b"POST /early-413 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n")
        status, headers, body, _ = c.response()
        check_eq(status, 413, "early response relayed")
        check(c.closed(), "client connection kept after an unread request body")


@test
def timeouts_for_response_and_keepalive():
    with HttpBackend("b1") as b, \
            Wsgate(config([b], timeouts='response = "1s"\nkeepalive = "1s"')) as gw:
        c = Client(gw.port)
        started = time.monotonic()
        c.send(get("/slow?ms=3000"))
        status, headers, body, _ = c.response()
        took = time.monotonic() - started
        check_eq(status, 504, "slow back end")
        check(0.8 < took < 2.5, f"504 after {took:.2f}s, expected about 1s")
        c = Client(gw.port)
        c.send(get("/id"))
        check_eq(c.response()[0], 200, "request before the keep-alive wait")
        started = time.monotonic()
        check(c.closed(timeout=4), "idle kept-alive connection not closed")
        took = time.monotonic() - started
        check(0.8 < took < 2.5, f"closed after {took:.2f}s of keep-alive, expected about 1s")
        entries = gw.access_log_entries(wait_for=2)
        time.sleep(0.3)
        entries = gw.access_log_entries(wait_for=2)
        check_eq([e["status"] for e in entries], [504, 200], "no line for the idle close")


@test
def no_backend_answers_502():
    dead = free_port()

    class Dead:
        address = f"{HOST}:{dead}"
    with Wsgate(config([Dead()])) as gw:
        status_line = raw_exchange(gw.port, get("/id")).split(b"\r\n", 1)[0]
        check(status_line.startswith(b"HTTP/1.1 502 "), f"answered {status_line!r}")
        e = gw.access_log_entries(wait_for=1)[0]
        check_eq((e["status"], e["reason"]), (502, "backend unreachable"), "logged")


if __name__ == "__main__":
    main()
