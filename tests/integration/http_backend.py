"""An in-process HTTP/1.1 back end for the plain-HTTP integration tests.

`HttpBackend(id)` listens on 127.0.0.1 (a thread per connection) and keeps
what a test needs to check the proxy from the far side: how many TCP
connections it accepted, and every request it got (connection number,
method, target, headers, raw head, body, and how the body was framed). It
speaks keep-alive, reads Content-Length and chunked bodies (strictly: a
framing error closes the connection and is recorded), answers
`Expect: 100-continue`, and serves these targets:

  /id                 200, body "id:<ID>"
  /echo               200, the request body back (Content-Length)
  /headers            200, JSON {lower-case name: value} of the request
  /chunked            200, chunked body "hello, chunked world" in 3 chunks
                      with an extension and a trailer
  /close-delimited    200 with neither length nor chunked: body, then close
  /conn-close         200 with Connection: close (the back end closes)
  /hop                200 with hop-by-hop headers (Connection: X-Internal,
                      X-Internal, Keep-Alive, Proxy-Authenticate)
  /status/NNN         status NNN; a body only when NNN may have one
  /slow?ms=N          200 "slow" after N ms
  /download?n=N       N bytes (byte i = i % 251), Content-Length, written in
                      64 KiB pieces with blocking sends (backpressure)
  /upload?delay=MS    waits MS ms, then reads the body as a stream; 200
                      "bytes=N sha256=HEX"
  /early-413          413 with Connection: close, without reading the body
  /once               200 "once", keeping the connection open; but the next
                      request on that connection is read and then dropped
                      unanswered (a keep-alive close racing a reuse)
  any WebSocket upgrade: 101, then one text frame "id:<ID>", then it echoes
                      text frames until a close frame
A HEAD request gets the GET head without a body.
"""

import hashlib
import json
import socket
import threading
import time
import urllib.parse

from harness import HOST, OP_CLOSE, OP_TEXT, accept_key, decode_frame, encode_frame


class FramingError(Exception):
    pass


class Request:
    def __init__(self, conn, method, target, version, headers, raw_head):
        self.conn, self.method, self.target, self.version = conn, method, target, version
        self.headers = headers          # lower-case name -> list of values
        self.raw_head = raw_head
        self.body = b""
        self.framing = "none"           # none | length | chunked
        self.chunk_lines = []           # raw chunk-size lines seen

    def header(self, name, default=None):
        values = self.headers.get(name.lower())
        return ", ".join(values) if values else default

    @property
    def path(self):
        return self.target.split("?", 1)[0]

    @property
    def query(self):
        return dict(urllib.parse.parse_qsl(self.target.split("?", 1)[1])) if "?" in self.target else {}


class Conn:
    """Buffered reads on one socket."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def line(self, limit=65536):
        while b"\r\n" not in self.buf:
            if len(self.buf) > limit:
                raise FramingError("line too long")
            self.fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exactly(self, n):
        while len(self.buf) < n:
            self.fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def stream(self, n, sink):
        """Passes n body bytes to sink(bytes) without keeping them."""
        while n > 0:
            if not self.buf:
                self.fill()
            piece = self.buf[:n]
            self.buf = self.buf[len(piece):]
            n -= len(piece)
            sink(piece)


class HttpBackend:
    def __init__(self, id="b"):
        self.id = id
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = []
        self.dropped = []   # requests read and left unanswered (/once)
        self.errors = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self):
        return f"{HOST}:{self.port}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.closing = True
        try:
            self.sock.close()
        except OSError:
            pass

    def requests_to(self, path):
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def _accept(self):
        while not self.closing:
            try:
                sock, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._serve, args=(sock, number), daemon=True).start()

    def _serve(self, sock, number):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(sock)
        drop_next = False
        try:
            while True:
                request = self._read_head(conn, number)
                if request is None:
                    return
                if drop_next:
                    with self.lock:
                        self.dropped.append(request)
                    return
                with self.lock:
                    self.requests.append(request)
                if request.path == "/once":
                    self._read_body(conn, request)
                    self._send(sock, 200, b"once")
                    drop_next = True
                    continue
                if not self._handle(conn, request):
                    return
        except (EOFError, ConnectionError, OSError):
            pass
        except FramingError as e:
            with self.lock:
                self.errors.append(str(e))
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _read_head(self, conn, number):
        try:
            first = conn.line()
        except EOFError:
            return None
        lines = [first]
        while True:
            line = conn.line()
            if not line:
                break
            lines.append(line)
        method, target, version = first.decode("latin-1").split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        raw = b"\r\n".join(lines) + b"\r\n\r\n"
        return Request(number, method, target, version, headers, raw)

    def _read_body(self, conn, request, sink=None):
        keep = sink is None
        parts = []
        sink = sink or parts.append
        te = request.header("transfer-encoding")
        if te is not None:
            if te.lower() != "chunked":
                raise FramingError(f"transfer-encoding {te}")
            request.framing = "chunked"
            while True:
                line = conn.line()
                request.chunk_lines.append(line)
                size_text = line.split(b";", 1)[0]
                if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
                    raise FramingError(f"bad chunk size line {line!r}")
                size = int(size_text, 16)
                if size == 0:
                    while conn.line():
                        pass
                    break
                conn.stream(size, sink)
                if conn.exactly(2) != b"\r\n":
                    raise FramingError("chunk data not followed by CRLF")
        elif request.header("content-length") is not None:
            request.framing = "length"
            conn.stream(int(request.header("content-length")), sink)
        if keep:
            request.body = b"".join(parts)

    def _send(self, sock, status, body=b"", headers=(), head_only=False, length=True):
        reason = {200: "OK", 204: "No Content", 304: "Not Modified", 413: "Content Too Large"}.get(status, "Status")
        out = [f"HTTP/1.1 {status} {reason}"]
        for name, value in headers:
            out.append(f"{name}: {value}")
        if length and status >= 200 and status not in (204, 304):
            out.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(out) + "\r\n\r\n").encode()
        if not head_only and status >= 200 and status not in (204, 304):
            data += body
        sock.sendall(data)

    def _handle(self, conn, request):
        """Answers one request; False when the connection must end."""
        sock = conn.sock
        if "websocket" in (request.header("upgrade") or "").lower():
            self._websocket(conn, request)
            return False
        if (request.header("expect") or "").lower() == "100-continue":
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        path, head_only = request.path, request.method == "HEAD"
        if path == "/early-413":
            self._send(sock, 413, b"too large\n", [("Connection", "close")])
            return False
        if path == "/upload":
            # A small receive buffer: while this back end waits, the kernel
            # holds little, so whatever piles up is in the proxy.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            time.sleep(int(request.query.get("delay", "0")) / 1000)
            digest, count = hashlib.sha256(), [0]

            def sink(piece):
                digest.update(piece)
                count[0] += len(piece)
            self._read_body(conn, request, sink)
            self._send(sock, 200, f"bytes={count[0]} sha256={digest.hexdigest()}".encode())
            return True
        self._read_body(conn, request)
        closing = (request.header("connection") or "").lower() == "close"
        if path == "/id":
            self._send(sock, 200, f"id:{self.id}".encode(), head_only=head_only)
        elif path == "/echo":
            self._send(sock, 200, request.body, head_only=head_only)
        elif path == "/headers":
            body = json.dumps({k: ", ".join(v) for k, v in request.headers.items()}).encode()
            self._send(sock, 200, body, [("Content-Type", "application/json")], head_only=head_only)
        elif path == "/chunked":
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
                         b"5;ext=1\r\nhello\r\n"
                         b"9\r\n, chunked\r\n"
                         b"6\r\n world\r\n"
                         b"0\r\nX-Checksum: abc\r\n\r\n")
        elif path == "/close-delimited":
            sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            return False
        elif path == "/conn-close":
            self._send(sock, 200, f"id:{self.id}".encode(), [("Connection", "close")])
            return False
        elif path == "/hop":
            self._send(sock, 200, b"hop", [("Connection", "X-Internal"), ("X-Internal", "secret"),
                                           ("Keep-Alive", "timeout=5"), ("Proxy-Authenticate", "Basic"),
                                           ("X-Public", "yes")])
        elif path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            self._send(sock, status, b"status body\n", head_only=head_only)
        elif path == "/slow":
            time.sleep(int(request.query.get("ms", "100")) / 1000)
            self._send(sock, 200, b"slow")
        elif path == "/download":
            n = int(request.query.get("n", "0"))
            sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n".encode())
            if head_only:
                return not closing
            pattern = bytes(i % 251 for i in range(251 * 262))  # 65762 bytes, a whole number of periods
            sent = 0
            while sent < n:
                piece = pattern[:min(len(pattern), n - sent)]
                sock.sendall(piece)
                sent += len(piece)
        else:
            self._send(sock, 404, b"no such target\n")
        return not closing

    def _websocket(self, conn, request):
        key = request.header("sec-websocket-key")
        conn.sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n").encode())
        conn.sock.sendall(encode_frame(OP_TEXT, f"id:{self.id}".encode(), mask=False))
        while True:
            frame, used = decode_frame(conn.buf)
            while frame is None:
                conn.fill()
                frame, used = decode_frame(conn.buf)
            conn.buf = conn.buf[used:]
            if frame.opcode == OP_CLOSE:
                conn.sock.sendall(encode_frame(OP_CLOSE, frame.payload[:2], mask=False))
                return
            if frame.opcode == OP_TEXT:
                conn.sock.sendall(encode_frame(OP_TEXT, frame.payload, mask=False))


def pattern_bytes(n):
    """The bytes /download?n=N sends."""
    period = bytes(i % 251 for i in range(251))
    return (period * (n // 251 + 1))[:n]
