"""HTTP/2 on the front end (issue 16): WebSockets over HTTP/2 (RFC 8441
extended CONNECT), plain requests over h2 and h2c, and every tunnel rule
over HTTP/1.1, TLS and h2 from one parametrised body.

Drives proxy/runtime/h2_connection.cpp (the nghttp2 glue: each stream a
Session over a bufferevent pair), proxy/protocol/h2_mapping.cpp (the
header translation), the HTTP/2 detection in
proxy/runtime/session_handshake.cpp and the ALPN choice in
proxy/net/tls.cpp. Clients: tests/integration/h2client.py (python3-h2),
curl --http2 and nghttp."""

import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time

from harness import (HOST, OP_BINARY, OP_CONT, OP_TEXT, Backend, FrameSocket, Wsgate, check, check_eq,
                     decode_frame, main, new_key, new_tmpdir, parse_head, read_head, reject, sanitizer_build, test,
                     upgrade_head, wait_until)
from http_backend import HttpBackend
from h2client import H2Client
from tlsutil import Ca, render_toml

NGHTTP = shutil.which("nghttp")
CURL = shutil.which("curl")


# ---- configuration -------------------------------------------------------------

def config(pools, listeners, limits=None, timeouts=None, heartbeat=None, routes=None, server=None):
    routes = routes or [{"path_prefix": "/", "pool": pools[0]["name"]}]
    rendered = []
    for pool in pools:
        rendered.append({"name": pool["name"], "hash": pool.get("hash", "ip"), "algorithm": "ring",
                         "backend": [{"address": getattr(b, "address", b)} for b in pool["backends"]]})
    return render_toml({
        "server": {"workers": 1, "max_connections": 100000, "drain_timeout": "1s", **(server or {})},
        "log": {"access": "@TMP@/access.log", "format": "json", "error": "@TMP@/error.log", "level": "info"},
        "listener": listeners,
        "timeouts": {"handshake": "5s", "connect": "2s", "idle": "5m", **(timeouts or {})},
        "heartbeat": {"interval": "0s", "timeout": "10s", "peers": "client", **(heartbeat or {})},
        "limits": {"max_header_bytes": 16384, "max_message_bytes": 0, "buffer_bytes": 262144, **(limits or {})},
        "route": routes,
        "pool": rendered,
    })


_pki = {}


def pki():
    """One CA and gateway certificate for the whole file (openssl is slow)."""
    if not _pki:
        d = new_tmpdir("pki")
        ca = Ca(d)
        cert, key = ca.issue("gw.test", dns=["gw.test", "localhost"], ips=[HOST])
        _pki.update(ca=ca.cert, cert=cert, key=key)
    return _pki


def tls_listener(**extra):
    p = pki()
    return {"listen": f"{HOST}:@PORT@", "tls": {"cert": p["cert"], "key": p["key"]}, **extra}


def plain_listener(**extra):
    return {"listen": f"{HOST}:@PORT@", **extra}


# ---- one WebSocket, whatever carries it ------------------------------------------

class H2Ws(FrameSocket):
    """A WebSocket on one HTTP/2 stream, with FrameSocket's methods."""

    def __init__(self, client, sid):
        super().__init__(None, b"", mask=True)
        self.client, self.sid = client, sid
        self.stream = client.streams[sid]
        self.eof = False

    def send_raw(self, data):
        self.client.send_data(self.sid, data)
        self.bytes_sent += len(data)

    def recv_frame(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            frame, used = decode_frame(bytes(self.stream.data))
            if frame is not None:
                del self.stream.data[:used]
                return frame
            if self.stream.ended or self.stream.reset is not None or self.client.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout(f"no frame within {timeout}s")
            self.client.pump(min(left, 0.5))

    def close(self):
        self.client.close()

    def abort(self):
        self.client.close()


def open_ws(kind, port, path="/", protocols=None):
    """A WebSocket to the gateway on <port> over <kind>: "http/1.1" (plain
    listener), "tls" (HTTP/1.1 over TLS) or "h2" (RFC 8441 over TLS)."""
    if kind == "h2":
        c = H2Client(port, tls_ca=pki()["ca"], server_hostname="gw.test")
        check_eq(c.alpn, "h2", "ALPN")
        sid = c.websocket(path, protocols=protocols)
        check_eq(c.streams[sid].headers.get(":status"), "200", "extended CONNECT answer")
        return H2Ws(c, sid)
    sock = socket.create_connection((HOST, port), timeout=5)
    if kind == "tls":
        ctx = ssl.create_default_context(cafile=pki()["ca"])
        ctx.set_alpn_protocols(["http/1.1"])
        sock = ctx.wrap_socket(sock, server_hostname="gw.test")
    extra = [("Sec-WebSocket-Protocol", ", ".join(protocols))] if protocols else []
    key = new_key()
    sock.sendall(upgrade_head(path, f"gw.test:{port}", key, extra=extra))
    resp, leftover = read_head(sock, 5)
    status_line, headers = parse_head(resp)
    check_eq(status_line[1], "101", "upgrade answer")
    ws = FrameSocket(sock, leftover, mask=True)
    ws.headers = headers
    return ws


def listeners_for(kind, **extra):
    return [plain_listener(**extra)] if kind == "http/1.1" else [tls_listener(**extra)]


KINDS = ("http/1.1", "tls", "h2")
PROTO_OF = {"http/1.1": "http/1.1", "tls": "http/1.1", "h2": "h2"}


# ---- RFC 8441 echo ---------------------------------------------------------------

def echo_sizes(ws):
    for n in (0, 125, 126, 65536, 1 << 20):
        payload = os.urandom(n)
        ws.send_binary(payload)
        got = ws.recv_message(timeout=15)
        check(got is not None and got[0] == OP_BINARY and got[1] == payload, f"echo of {n} B")
    # A fragmented message is relayed frame by frame and comes back whole.
    ws.send_frame(OP_TEXT, b"frag", fin=False)
    ws.send_frame(OP_CONT, b"men", fin=False)
    ws.send_frame(OP_CONT, b"ted", fin=True)
    check_eq(ws.recv_message(timeout=5), (OP_TEXT, b"fragmented"), "fragmented message")


@test(timeout=60)
def h2c_websocket_echo_subprotocol_close():
    """h2c with prior knowledge: RFC 8441 echo of 0 B .. 1 MiB and a
    fragmented message, the subprotocol relayed, the back end's close code
    and reason relayed; HTTP/1.1 on the same port still works."""
    with Backend("echo", id="b1", subprotocols=["chat", "superchat"]) as b, \
            Wsgate(config([{"name": "main", "backends": [b]}], [plain_listener(http2=True)])) as gw:
        c = H2Client(gw.port)
        sid = c.websocket("/room", protocols=["superchat"])
        headers = c.streams[sid].headers
        check_eq(headers.get(":status"), "200", ":status")
        check_eq(headers.get("sec-websocket-protocol"), "superchat", "subprotocol relayed")
        check("sec-websocket-accept" not in headers and "upgrade" not in headers, f"HTTP/1.1 fields leaked: {headers}")
        ws = H2Ws(c, sid)
        echo_sizes(ws)
        ws.send_text("close:4001")
        check_eq(ws.recv_close(timeout=5), (4001, "by backend"), "back end's close code and reason")
        ws.send_close(4001, "by backend")
        c.response(sid, timeout=5)
        check(c.streams[sid].ended, "stream ended after the close handshake")
        # HTTP/1.1 beside h2c on the same port.
        ws1 = open_ws("http/1.1", gw.port)
        ws1.send_text("whoami")
        check_eq(ws1.recv_message(), (OP_TEXT, b"id:b1"), "HTTP/1.1 on the h2c port")
        ws1.send_close()
        ws1.recv_close()
        entries = gw.access_log_entries(wait_for=2)
        protos = sorted(e["proto"] for e in entries)
        check_eq(protos, ["h2c", "http/1.1"], "proto of the two sessions")
        h2e = [e for e in entries if e["proto"] == "h2c"][0]
        check_eq((h2e["status"], h2e["close_code"], h2e["messages_in"]), (101, 4001, 7), "h2c access-log line")
        c.close()


@test(timeout=60)
def h2_tls_alpn_fifty_streams_one_connection():
    """ALPN h2 on a TLS listener by default; 50 WebSocket streams on one
    TCP connection, interleaved, nothing lost or reordered."""
    with Backend("echo", id="b1") as b, \
            Wsgate(config([{"name": "main", "backends": [b]}], [tls_listener()])) as gw:
        c = H2Client(gw.port, tls_ca=pki()["ca"], server_hostname="gw.test")
        check_eq(c.alpn, "h2", "ALPN on a TLS listener without http2 key")
        sids = [c.websocket(f"/s{i}") for i in range(50)]
        wss = [H2Ws(c, sid) for sid in sids]
        rounds = 20
        for r in range(rounds):
            for i, ws in enumerate(wss):
                ws.send_binary(struct.pack(">II", i, r) + bytes([r]) * (r * 97))
        for i, ws in enumerate(wss):
            for r in range(rounds):
                got = ws.recv_message(timeout=20)
                check(got is not None and got[1][:8] == struct.pack(">II", i, r) and len(got[1]) == 8 + r * 97,
                      f"stream {i} message {r}: {got and got[1][:8]!r}")
        # One TCP connection from the client the whole time.
        conns = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{gw.port} )"],
                               capture_output=True, text=True).stdout.strip().splitlines()
        check_eq(len(conns), 1, "client connections to the gateway")
        for ws in wss:
            ws.send_close(1000, "done")
        for ws in wss:
            check_eq(ws.recv_close(timeout=10), (1000, "done"), "close relayed")
        entries = gw.access_log_entries(wait_for=50, timeout=10)
        check_eq({e["proto"] for e in entries}, {"h2"}, "proto")
        check_eq(len(entries), 50, "one line per stream")
        c.close()


@test(timeout=60)
def refusal_relayed_while_other_streams_work():
    """A back end's refusal becomes the stream's status and body; malformed
    extended CONNECTs get 400/501; the connection's other streams carry on."""
    with Backend("echo", id="b1") as b, reject(403, b"forbidden by backend\n") as rb, \
            Wsgate(config([{"name": "main", "backends": [b]}, {"name": "deny", "backends": [rb]}],
                          [plain_listener(http2=True)],
                          routes=[{"path_prefix": "/deny", "pool": "deny"}, {"path_prefix": "/", "pool": "main"}])) as gw:
        c = H2Client(gw.port)
        live = H2Ws(c, c.websocket("/live"))
        live.send_text("before")
        check_eq(live.recv_message(), (OP_TEXT, b"before"), "echo before")
        sid = c.websocket("/deny")
        s = c.response(sid)
        check_eq(s.headers.get(":status"), "403", "refusal status")
        check_eq(bytes(s.data), b"forbidden by backend\n", "refusal body")
        # Not a WebSocket protocol: 501; no :authority: 400 (RFC 8441 §4).
        c.conn.config.validate_outbound_headers = False
        c.conn.config.normalize_outbound_headers = False
        bad = c.conn.get_next_available_stream_id()
        c.streams[bad] = type(s)(bad)
        c.conn.send_headers(bad, [(":method", "CONNECT"), (":protocol", "carrier-pigeon"), (":scheme", "http"),
                                  (":path", "/"), (":authority", "x")])
        c._flush()
        check_eq(c.response(bad).headers.get(":status"), "501", "unknown :protocol")
        bad2 = c.conn.get_next_available_stream_id()
        c.streams[bad2] = type(s)(bad2)
        c.conn.send_headers(bad2, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                                   (":path", "/")])
        c._flush()
        r2 = c.response(bad2)
        check(r2.reset is not None or (r2.headers or {}).get(":status") == "400",
              f"extended CONNECT without :authority: {r2.headers} reset={r2.reset}")
        live.send_text("after")
        check_eq(live.recv_message(), (OP_TEXT, b"after"), "echo after the refusals")
        entries = gw.access_log_entries(wait_for=1)
        check(any(e["status"] == 403 and e["proto"] == "h2c" for e in entries), f"refusal logged: {entries}")
        c.close()


@test(timeout=60)
def plain_http_over_h2_curl_nghttp_h2client():
    """Plain requests over h2 and h2c go to the HTTP/1.1 back ends: curl
    --http2 over TLS, nghttp over h2c, and POST bodies with and without
    Content-Length from the h2 client."""
    with HttpBackend("hb") as hb, \
            Wsgate(config([{"name": "main", "backends": [hb]}], [tls_listener()])) as gw:
        if CURL:
            out = subprocess.run([CURL, "-sS", "--http2", "--cacert", pki()["ca"], "--resolve", f"gw.test:{gw.port}:{HOST}",
                                  "-w", "\\n%{http_version} %{http_code}", f"https://gw.test:{gw.port}/id"],
                                 capture_output=True, text=True, timeout=15)
            check_eq(out.stdout, "id:hb\n2 200", f"curl --http2 (stderr {out.stderr!r})")
        c = H2Client(gw.port, tls_ca=pki()["ca"], server_hostname="gw.test")
        s = c.response(c.request("POST", "/echo", body=b"hello h2", headers=[("content-length", "8")]))
        check_eq((s.headers[":status"], bytes(s.data)), ("200", b"hello h2"), "POST with Content-Length")
        s = c.response(c.request("POST", "/echo", body=b"no length here"))
        check_eq((s.headers[":status"], bytes(s.data)), ("200", b"no length here"), "POST without Content-Length")
        s = c.response(c.request("GET", "/chunked"))
        check_eq((s.headers[":status"], bytes(s.data)), ("200", b"hello, chunked world"), "chunked body decoded")
        s = c.response(c.request("GET", "/download?n=300000"), timeout=20)
        check(bytes(s.data) == bytes(i % 251 for i in range(300000)), f"download of {len(s.data)} B")
        s = c.response(c.request("GET", "/slow?ms=300"))
        check_eq(bytes(s.data), b"slow", "long-poll style response")
        c.close()
        entries = gw.access_log_entries(wait_for=5)
        check(all(e["proto"] == "h2" for e in entries if e["path"] != "/id") and entries, f"protos {entries}")
    with HttpBackend("hb") as hb, \
            Wsgate(config([{"name": "main", "backends": [hb]}], [plain_listener(http2=True)])) as gw:
        if NGHTTP:
            out = subprocess.run([NGHTTP, f"http://{HOST}:{gw.port}/id"], capture_output=True, text=True, timeout=15)
            check_eq(out.stdout, "id:hb", f"nghttp over h2c (stderr {out.stderr!r})")
        entries = gw.access_log_entries(wait_for=1)
        check_eq({e["proto"] for e in entries}, {"h2c"}, "proto over h2c")


@test(timeout=40)
def status_metrics_and_sighup_keep_h2_connections():
    """/status counts HTTP/2 connections and streams, metrics are labelled
    by proto; a SIGHUP reload keeps the connection and its streams, and a
    new stream on it follows the new configuration."""
    from harness import admin_status, free_port
    import urllib.request
    admin = f"{HOST}:{free_port()}"
    with Backend("echo", id="b1") as b1, Backend("echo", id="b2") as b2:
        def conf(routes_other):
            text = config([{"name": "main", "backends": [b1]}, {"name": "other", "backends": [b2]}],
                          [plain_listener(http2=True)],
                          routes=([{"path_prefix": "/other", "pool": "other"}] if routes_other else [])
                          + [{"path_prefix": "/", "pool": "main"}])
            return text + f"\n[admin]\nlisten = \"{admin}\"\n"
        with Wsgate(conf(False)) as gw:
            c = H2Client(gw.port)
            ws_a, ws_b = H2Ws(c, c.websocket("/a")), H2Ws(c, c.websocket("/other"))
            for ws in (ws_a, ws_b):
                ws.send_text("whoami")
                check_eq(ws.recv_message(), (OP_TEXT, b"id:b1"), "before the reload: every path on main")
            port = int(admin.rsplit(":", 1)[1])
            check_eq(admin_status(port).get("http2"), {"connections": 1, "streams": 2}, "/status http2")
            metrics = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
            check("wsgate_h2_connections_active 1" in metrics, "h2 connections gauge")
            since = gw.error_log_offset()
            gw.rewrite_config(conf(True).replace("@PORT@", str(gw.port)).replace("@TMP@", gw.tmpdir))
            gw.reload()
            check(gw.wait_error_log(r"reloaded .*generation 2", timeout=5, since=since), "reload not done")
            for ws in (ws_a, ws_b):
                ws.send_text("whoami")
                check_eq(ws.recv_message(), (OP_TEXT, b"id:b1"), "open streams kept across the reload")
            ws_c = H2Ws(c, c.websocket("/other"))
            ws_c.send_text("whoami")
            check_eq(ws_c.recv_message(), (OP_TEXT, b"id:b2"), "a new stream on the old connection uses the new routes")
            check(not c.closed and c.goaway is None, "the connection survived the reload")
            for ws in (ws_a, ws_b, ws_c):
                ws.send_close()
                ws.recv_close()
            entries = gw.access_log_entries(wait_for=3)
            check_eq([e["proto"] for e in entries], ["h2c"] * 3, "proto")
            metrics = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
            check('wsgate_sessions_by_proto_total{proto="h2c"} 3' in metrics, "sessions by proto")
            c.close()


# ---- every tunnel rule over HTTP/1.1, TLS and h2, from one body -------------------

def rules_limits_idle(kind):
    """1002 for an unmasked client frame, 1009 over max_message_bytes, 1001
    after the idle timeout: the same close codes on every transport."""
    with Backend("echo", id="b1") as b, \
            Wsgate(config([{"name": "main", "backends": [b]}], listeners_for(kind),
                          limits={"max_message_bytes": 1000}, timeouts={"idle": "1s"})) as gw:
        ws = open_ws(kind, gw.port)
        ws.send_frame(OP_TEXT, b"unmasked", mask=False)
        check_eq(ws.recv_close(), (1002, "unmasked client frame"), "1002")
        ws.close()
        ws = open_ws(kind, gw.port)
        ws.send_binary(b"x" * 999)
        check_eq(ws.recv_message(), (OP_BINARY, b"x" * 999), "under the limit")
        ws.send_binary(b"x" * 1001)
        code, _ = ws.recv_close()
        check_eq(code, 1009, "1009 over max_message_bytes")
        ws.close()
        ws = open_ws(kind, gw.port)
        started = time.monotonic()
        check_eq(ws.recv_close(timeout=5), (1001, "idle timeout"), "idle close")
        check(0.8 < time.monotonic() - started < 4, "idle timeout timing")
        ws.close()
        entries = gw.access_log_entries(wait_for=3)
        check_eq(sorted(e["close_code"] for e in entries), [1001, 1002, 1009], "close codes logged")
        check_eq({e["proto"] for e in entries}, {PROTO_OF[kind]}, "proto")


def rules_heartbeat(kind):
    """Our heartbeat pings reach the client; a client that never answers
    is dropped after heartbeat.timeout."""
    with Backend("echo", id="b1") as b, \
            Wsgate(config([{"name": "main", "backends": [b]}], listeners_for(kind),
                          heartbeat={"interval": "300ms", "timeout": "500ms", "peers": "client"})) as gw:
        ws = open_ws(kind, gw.port)
        check(ws.wait_eof(timeout=5), "connection or stream not ended by the heartbeat timeout")
        check(len(ws.pings) >= 1, "no heartbeat ping seen")
        entries = gw.access_log_entries(wait_for=1)
        check_eq((entries[0]["reason"], entries[0]["proto"]), ("heartbeat timeout", PROTO_OF[kind]), "logged")
        # A client that answers stays.
        ws = open_ws(kind, gw.port)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                got = ws.recv_message(timeout=0.2, answer_pings=True)
            except socket.timeout:
                continue
            check(got is None or got[0] != 8, f"an answering client was closed: {got}")
        ws.send_text("alive")
        check_eq(ws.recv_message(answer_pings=True), (OP_TEXT, b"alive"), "echo after 1.5 s of heartbeats")
        ws.close()


def rules_backend_death_drain_sigterm(kind):
    """1014 when the back end dies, 1012 when a reload removes it, 1001 on
    SIGTERM (for h2: GOAWAY too, and the stream's close frame)."""
    def rewrite(gw, backend):
        text = config([{"name": "main", "backends": [backend]}], listeners_for(kind))
        gw.rewrite_config(text.replace("@PORT@", str(gw.port)).replace("@TMP@", gw.tmpdir))
        gw.reload()

    def connect_to(gw, ident):
        found = []

        def attempt():
            try:
                ws = open_ws(kind, gw.port)
            except (AssertionError, OSError):
                return False  # the old generation's dead back end (502) until the reload is adopted
            ws.send_text("whoami")
            if ws.recv_message() == (OP_TEXT, ident.encode()):
                found.append(ws)
                return True
            ws.close()
            return False
        check(wait_until(attempt, 5, interval=0.1), f"no session on {ident}")
        return found[0]

    with Backend("echo", id="b1") as b1, Backend("echo", id="b2") as b2, Backend("echo", id="b3") as b3, \
            Wsgate(config([{"name": "main", "backends": [b1]}], listeners_for(kind))) as gw:
        ws = connect_to(gw, "id:b1")
        b1.kill()
        check_eq(ws.recv_close(timeout=5), (1014, "backend reset"), "1014")
        ws.close()
        rewrite(gw, b2)
        ws = connect_to(gw, "id:b2")
        rewrite(gw, b3)
        check_eq(ws.recv_close(timeout=5), (1012, "service restart"), "1012 after the reload")
        ws.close()
        ws = connect_to(gw, "id:b3")
        gw.signal(signal.SIGTERM)
        check_eq(ws.recv_close(timeout=5), (1001, "shutdown"), "SIGTERM 1001")
        if kind == "h2":
            ws.send_close(1001)
            wait_until(lambda: not ws.client.pump(0.2) or ws.client.goaway is not None, 5)
            check(ws.client.goaway == 0 or ws.client.closed, f"GOAWAY NO_ERROR on SIGTERM, got {ws.client.goaway}")
        check(gw.proc.wait(timeout=10) == 0, "exit status after SIGTERM")


def rules_backpressure(kind):
    """A client that reads nothing holds the back end at limits.buffer_bytes
    (per stream on h2: flow control): memory stays bounded, then every
    message arrives in order."""
    count, size = 1500, 16384
    with Backend("flood", id="f", count=count, size=size) as b, \
            Wsgate(config([{"name": "main", "backends": [b]}], listeners_for(kind))) as gw:
        baseline = gw.rss_kib()
        ws = open_ws(kind, gw.port)
        peak = baseline
        for _ in range(8):
            time.sleep(0.25)
            peak = max(peak, gw.rss_kib())
        slack = 10 if sanitizer_build() else 1  # ASan's quarantine keeps freed memory resident
        check(peak - baseline < 24 * 1024 * slack, f"RSS grew by {(peak - baseline) // 1024} MiB while the client did not read")
        got = 0
        while True:
            message = ws.recv_message(timeout=15)
            check(message is not None, f"ended after {got} messages")
            op, payload = message
            if op == OP_TEXT:
                break
            check_eq(struct.unpack(">Q", payload[:8])[0], got, "sequence number")
            got += 1
        check_eq(got, count, "messages")
        ws.close()
        return f"RSS +{(peak - baseline) // 1024} MiB while stalled"


def _register(rule, kind, timeout):
    def run():
        return rule(kind)
    run.__name__ = f"{rule.__name__}_{kind.replace('/', '').replace('.', '')}"
    test(run, timeout=timeout)


for _kind in KINDS:
    _register(rules_limits_idle, _kind, 40)
    _register(rules_heartbeat, _kind, 40)
    _register(rules_backend_death_drain_sigterm, _kind, 40)
    _register(rules_backpressure, _kind, 60)


main()
