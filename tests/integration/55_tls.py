"""TLS: wss:// termination with SNI and minimum versions, certificates
reloaded on SIGHUP, and verified TLS to back ends (a bad back-end
certificate gives 502). A TLS client's side of a tunnel, and a TLS back
end's, run on the socket transport's TLS path
(proxy/runtime/transport_socket.cpp, proxy/runtime/transport_tls.cpp)
under the tunnel policy (proxy/runtime/tunnel.cpp). Certificates
come from a throwaway CA made with the openssl CLI in each test's
directory."""

import asyncio
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import warnings

from harness import (HOST, OP_TEXT, Backend, FrameSocket, HarnessError, Wsgate, check, check_eq,
                     encode_frame, greets_with_the_101, main, new_tmpdir, parse_head, raw_request, read_head, recv_to_eof, reject, run_async,
                     test, upgrade_head, wait_until, ws_connect)
from tlsutil import (OPENSSL, Ca, TlsBackend, client_context, gateway_config,
                     peer_common_name, s_client_subject)


def tls_listener(cert, key, sni=(), min_version=None):
    tls = {"cert": cert, "key": key}
    if min_version:
        tls["min_version"] = min_version
    if sni:
        tls["sni"] = [{"server_name": n, "cert": c, "key": k} for n, c, k in sni]
    return {"listen": f"{HOST}:@PORT@", "tls": tls}


def wss(port, ctx, server_hostname, path="/"):
    import websockets
    return websockets.connect(f"wss://{HOST}:{port}{path}", ssl=ctx,
                              server_hostname=server_hostname, ping_interval=None,
                              max_size=None, open_timeout=5, close_timeout=2)


def wss_ask(port, ctx, server_hostname, *commands):
    async def go():
        async with wss(port, ctx, server_hostname) as ws:
            answers = []
            for c in commands:
                await ws.send(c)
                answers.append(await ws.recv())
            return answers
    return run_async(go(), timeout=15)


@test
def wss_echo():
    d = new_tmpdir("pki")
    ca = Ca(d)
    cert, key = ca.issue("gw.test", dns=["gw.test"], ips=[HOST])
    with Backend("echo", id="b1") as b, \
            Wsgate(gateway_config([tls_listener(cert, key)], [{"name": "main", "backends": [b]}])) as gw:
        ctx = client_context(ca.cert)
        echo, whoami, headers = wss_ask(gw.port, ctx, "gw.test", "over tls", "whoami", "headers")
        check_eq(echo, "over tls", "echo through wss://")
        check_eq(whoami, "id:b1", "back end")
        seen = json.loads(headers)
        check_eq(seen.get("x-forwarded-proto"), "https", "X-Forwarded-Proto on a TLS listener")
        check_eq(seen.get("x-forwarded-for"), HOST, "X-Forwarded-For")
        # 1 MiB message: TLS records are split and reassembled both ways.
        async def big():
            async with wss(gw.port, ctx, "gw.test") as ws:
                payload = os.urandom(1 << 20)
                await ws.send(payload)
                return payload, await ws.recv()
        sent, got = run_async(big(), timeout=20)
        check(sent == got, f"1 MiB binary echo differs ({len(got)} bytes back)")
        entries = gw.access_log_entries(wait_for=2)
        check(all(e["status"] == 101 for e in entries), f"access log statuses {entries}")
        # Plain HTTP on the TLS port is not answered as HTTP.
        try:
            data = raw_request(gw.port, upgrade_head("/", f"{HOST}:{gw.port}"), timeout=5)
        except OSError:
            data = (0, {}, b"")
        check(data[0] != 101, "plain-text upgrade on the TLS listener was accepted")


@test
def plain_backend_bytes_behind_its_head_over_tls():
    """A TLS client and a plain back end: the back end's handshake is read
    without a bufferevent and moves into one for the TLS tunnel or a relayed
    refusal; bytes that arrived with the back end's head must come along."""
    d = new_tmpdir("pki")
    ca = Ca(d)
    cert, key = ca.issue("gw.test", dns=["gw.test"])
    ctx = client_context(ca.cert)
    with greets_with_the_101() as rb, \
            Wsgate(gateway_config([tls_listener(cert, key)], [{"name": "main", "backends": [rb]}])) as gw:
        async def converse():
            async with wss(gw.port, ctx, "gw.test") as ws:
                greetings = [await ws.recv(), await ws.recv()]
                await ws.send("echo me")
                return greetings, await ws.recv()
        greetings, echo = run_async(converse(), timeout=15)
        check_eq(greetings, ["hello-1", "hello-2"], "frames in the 101's segment")
        check_eq(echo, "echo me", "echo after them")
    with reject(403, b"go away over tls\n") as rb, \
            Wsgate(gateway_config([tls_listener(cert, key)], [{"name": "main", "backends": [rb]}])) as gw:
        raw = socket.create_connection((HOST, gw.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="gw.test") as tls:
            tls.sendall(upgrade_head("/", f"{HOST}:{gw.port}"))
            answer = recv_to_eof(tls)
        head, _, body = answer.partition(b"\r\n\r\n")
        status_line, headers = parse_head(head)
        check_eq(status_line[1], "403", "relayed status")
        check_eq(headers.get("x-backend"), "raw", "back end's header")
        check_eq(body, b"go away over tls\n", "relayed body")


class RecordBatchTls:
    """A TLS client over <sock> whose records are held until flush(), so that
    many records reach wsgate in one TCP write: the socket then turns
    readable once for all of them (ssl.SSLObject over memory BIOs). Enough
    of a socket for FrameSocket."""

    def __init__(self, sock, ctx, server_hostname):
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                self._fill()
        self.flush()

    def _fill(self):
        data = self.sock.recv(65536)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()

    def flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def write_record(self, data):
        self.tls.write(data)

    def sendall(self, data):
        self.tls.write(data)
        self.flush()

    def settimeout(self, seconds):
        self.sock.settimeout(seconds)

    def recv(self, size):
        while True:
            try:
                return self.tls.read(size)
            except ssl.SSLWantReadError:
                self.flush()
                self._fill()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""


@test
def tls_records_in_one_segment():
    """200 WebSocket frames, each in its own TLS record, reach wsgate in one
    TCP write: all are read (OpenSSL holds the records it read ahead, and
    no readiness event reports them) and echoed in order."""
    d = new_tmpdir("pki")
    ca = Ca(d)
    cert, key = ca.issue("gw.test", dns=["gw.test"])
    with Backend("echo", id="e") as b, \
            Wsgate(gateway_config([tls_listener(cert, key)], [{"name": "main", "backends": [b]}])) as gw:
        tls = RecordBatchTls(socket.create_connection((HOST, gw.port), timeout=5), client_context(ca.cert),
                             "gw.test")
        tls.sendall(upgrade_head("/", f"{HOST}:{gw.port}"))
        head, leftover = read_head(tls, 5)
        check(head.startswith(b"HTTP/1.1 101"), f"answer: {head[:40]!r}")
        ws = FrameSocket(tls, leftover, mask=True)
        sent = [f"record {i}".encode() for i in range(200)]
        for payload in sent:
            tls.write_record(encode_frame(OP_TEXT, payload))
        tls.flush()
        got = []
        for _ in sent:
            message = ws.recv_message(timeout=5)
            if message is None:
                break
            got.append(message[1])
        check(got == sent, f"{len(got)} of {len(sent)} frames echoed (in order: {got == sent[:len(got)]})")
        ws.send_close(1000)
        check_eq(ws.recv_close(), (1000, ""), "close reply")


@test(timeout=90)
def tls_tunnel_backpressure_bursts_and_faults():
    """The raw TLS tunnel (SSL_read with read-ahead, SSL_write retried from
    the pending buffer): a client that does not read for 2 s while the back
    end floods it gets every message in order afterwards with wsgate's RSS
    bounded; 2,000 small messages written in one burst (many records per
    read) all come back; a back end killed between messages gives 1014; a
    clean close gets its reply."""
    import websockets
    d = new_tmpdir("pki")
    ca = Ca(d)
    cert, key = ca.issue("gw.test", dns=["gw.test"])
    ctx = client_context(ca.cert)
    count, size = 3000, 16384  # 48 MiB, far above the socket buffers
    with Backend("flood", id="f", count=count, size=size) as flood, Backend("echo", id="e") as echo, \
            Wsgate(gateway_config([tls_listener(cert, key)],
                                  [{"name": "flood", "backends": [flood]}, {"name": "echo", "backends": [echo]}],
                                  routes=[{"path_prefix": "/flood", "pool": "flood"},
                                          {"path_prefix": "/", "pool": "echo"}])) as gw:
        baseline = gw.rss_kib()

        async def paused_reader():
            async with wss(gw.port, ctx, "gw.test", "/flood") as ws:
                peak = baseline
                for _ in range(8):
                    await asyncio.sleep(0.25)
                    peak = max(peak, gw.rss_kib())
                for seq in range(count):
                    message = await asyncio.wait_for(ws.recv(), 15)
                    if message[:8] != struct.pack(">Q", seq) or message[8:] != bytes([seq % 251]) * (size - 8):
                        return peak, f"message {seq} out of order or corrupted"
                return peak, await ws.recv()
        peak, last = run_async(paused_reader(), timeout=60)
        check_eq(last, "done", "flood ends with its final text")
        check(peak - baseline < 32 * 1024, f"RSS grew by {(peak - baseline) // 1024} MiB while the client did not read")

        async def burst():
            async with wss(gw.port, ctx, "gw.test") as ws:
                sent = [f"m{i:05d}" for i in range(2000)]
                for m in sent:
                    await ws.send(m)
                got = [await asyncio.wait_for(ws.recv(), 10) for _ in sent]
                await ws.close(1000, "bye")
                return sent, got, ws.close_code
        sent, got, code = run_async(burst(), timeout=30)
        check(got == sent, f"burst: {sum(a == b for a, b in zip(sent, got))} of {len(sent)} echoed in order")
        check_eq(code, 1000, "close reply code")

        # Killed between messages, so that the stream to the client is at a
        # frame boundary and a close frame can follow (mid-frame, wsgate
        # can only end the connection: 80_faults covers that).
        async def killed():
            async with wss(gw.port, ctx, "gw.test") as ws:
                await ws.send("before the kill")
                await ws.recv()
                echo.kill()
                try:
                    while True:
                        await asyncio.wait_for(ws.recv(), 10)
                except websockets.ConnectionClosed as closed:
                    return closed.rcvd.code if closed.rcvd else None
        check_eq(run_async(killed(), timeout=30), 1014, "close code after the back end died")


@test
def refusals_inside_tls():
    """Refusals decided after the TLS handshake (Origin, handshake rate) are
    HTTP responses inside the TLS session."""
    import websockets
    d = new_tmpdir("pki")
    ca = Ca(d)
    cert, key = ca.issue("gw.test", dns=["gw.test"])
    with Backend("echo", id="b1") as b, \
            Wsgate(gateway_config([tls_listener(cert, key)], [{"name": "main", "backends": [b]}],
                                  routes=[{"path_prefix": "/", "pool": "main",
                                           "allowed_origins": ["https://app.example.com"]}],
                                  limits={"handshakes_per_ip": 0.2, "handshake_burst": 2})) as gw:
        ctx = client_context(ca.cert)

        async def status_of(origin):
            try:
                async with websockets.connect(f"wss://{HOST}:{gw.port}/", ssl=ctx,
                                              server_hostname="gw.test", origin=origin,
                                              open_timeout=5, close_timeout=2):
                    return 101
            except websockets.InvalidStatusCode as e:
                return e.status_code
        check_eq(run_async(status_of("https://app.example.com")), 101, "allowed Origin over TLS")
        check_eq(run_async(status_of("https://evil.test")), 403, "other Origin over TLS")
        check_eq(run_async(status_of("https://app.example.com")), 429, "third handshake in a burst of 2")


@test(timeout=60)
def sni_picks_certificate():
    d = new_tmpdir("pki")
    ca = Ca(d)
    main_cert, main_key = ca.issue("default.test", dns=["default.test"])
    a_cert, a_key = ca.issue("a.example.com", dns=["a.example.com"])
    w_cert, w_key = ca.issue("wildcard.example.com", dns=["*.example.com"])
    listener = tls_listener(main_cert, main_key, sni=[
        ("*.example.com", w_cert, w_key), ("a.example.com", a_cert, a_key)])
    with Backend("echo", id="b1") as b, \
            Wsgate(gateway_config([listener], [{"name": "main", "backends": [b]}])) as gw:
        cases = [("a.example.com", "a.example.com"),        # exact beats the wildcard listed first
                 ("b.example.com", "wildcard.example.com"),
                 ("A.EXAMPLE.COM", "a.example.com"),        # SNI matching ignores case
                 ("x.y.example.com", "default.test"),       # the wildcard covers one label
                 ("example.com", "default.test"),
                 ("other.test", "default.test"),
                 (None, "default.test")]
        for name, expected in cases:
            rc, subject, out = s_client_subject(gw.port, name)
            check(subject.endswith("CN = " + expected) or subject.endswith("CN=" + expected),
                  f"s_client -servername {name}: subject {subject!r}, expected CN {expected} "
                  f"(rc {rc}): {out[-300:]}")
            check_eq(peer_common_name(gw.port, name, ca.cert), expected,
                     f"python ssl, SNI {name}: certificate CN")
        ctx = client_context(ca.cert)
        for name in ("a.example.com", "b.example.com", "default.test"):
            check_eq(wss_ask(gw.port, ctx, name, "hi " + name), ["hi " + name],
                     f"wss echo with SNI {name} and host-name verification")
        return f"{len(cases)} SNI cases checked with openssl s_client and python ssl"


def client_hello_version(argv):
    """The highest version <argv> (an s_client command whose -connect
    address is "@ADDR@") offers: ClientHello.legacy_version as (major,
    minor), read by a one-shot listener. None if it sent no ClientHello."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(1)
    listener.settimeout(10)
    port = listener.getsockname()[1]
    got = {}

    def accept():
        try:
            conn, _ = listener.accept()
            conn.settimeout(5)
            data = b""
            while len(data) < 11:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            got["hello"] = data
            conn.close()
        except OSError:
            pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    subprocess.run([a.replace("@ADDR@", f"{HOST}:{port}") for a in argv],
                   input=b"", capture_output=True, timeout=15)
    t.join(10)
    listener.close()
    hello = got.get("hello", b"")
    # TLS record (type 22) -> handshake type 1 -> legacy_version at offset 9.
    if len(hello) < 11 or hello[0] != 22 or hello[5] != 1:
        return None
    return hello[9], hello[10]


@test(timeout=60)
def old_tls_versions_refused():
    d = new_tmpdir("pki")
    ca = Ca(d)
    cert, key = ca.issue("gw.test", dns=["gw.test"])
    exercised = []
    refusals = 0   # TLS 1.1 handshakes that offered 1.1 and were refused
    with Backend("echo", id="b1") as b, \
            Wsgate(gateway_config([tls_listener(cert, key)], [{"name": "main", "backends": [b]}])) as gw:
        # openssl s_client restricted to TLS 1.1 (security level 0, or
        # OpenSSL 3 refuses to offer 1.1 at all).
        argv = [OPENSSL, "s_client", "-connect", "@ADDR@", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]
        offered = client_hello_version(argv)
        if offered == (3, 2):
            rc, subject, out = s_client_subject(gw.port, None, argv[4:])
            check(rc != 0 and not subject, f"s_client -tls1_1 got a session (rc {rc}): {out[-400:]}")
            check("alert protocol version" in out or "unsupported protocol" in out
                  or "wrong version number" in out,
                  f"s_client -tls1_1 failed without a version refusal: {out[-400:]}")
            refusals += 1
            exercised.append("openssl s_client -tls1_1 (ClientHello offered 1.1)")
        else:
            exercised.append(f"openssl s_client -tls1_1 offers no TLS 1.1 ({offered})")
        # Python ssl capped at TLS 1.1.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            try:
                ctx.minimum_version = ssl.TLSVersion.TLSv1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
                ctx.set_ciphers("DEFAULT@SECLEVEL=0")
            except (ValueError, ssl.SSLError) as e:
                ctx = None
                exercised.append(f"python ssl cannot cap at 1.1 ({e})")
        if ctx is not None:
            try:
                with socket.create_connection((HOST, gw.port), timeout=5) as raw:
                    with ctx.wrap_socket(raw, server_hostname="gw.test") as s:
                        raise AssertionError(f"python ssl negotiated {s.version()}")
            except ssl.SSLError as e:
                check("VERSION" in e.reason.upper() or "PROTOCOL" in e.reason.upper(),
                      f"TLS 1.1 handshake failed for another reason: {e}")
                refusals += 1
                exercised.append(f"python ssl max TLSv1.1 ({e.reason})")
        check(refusals > 0, f"no TLS 1.1 client could be exercised: {exercised}")
        # TLS 1.2 is accepted on the default listener.
        ctx12 = client_context(ca.cert)
        ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
        check_eq(wss_ask(gw.port, ctx12, "gw.test", "tls1.2"), ["tls1.2"], "TLS 1.2 echo")

    # min_version = "1.3": a TLS 1.2 client is refused, TLS 1.3 works.
    with Backend("echo", id="b1") as b, \
            Wsgate(gateway_config([tls_listener(cert, key, min_version="1.3")],
                                  [{"name": "main", "backends": [b]}])) as gw:
        ctx12 = client_context(ca.cert)
        ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            with socket.create_connection((HOST, gw.port), timeout=5) as raw:
                with ctx12.wrap_socket(raw, server_hostname="gw.test") as s:
                    raise AssertionError(f"min_version 1.3 listener negotiated {s.version()}")
        except ssl.SSLError as e:
            exercised.append(f"min_version 1.3 refuses TLS 1.2 ({e.reason})")
        ctx13 = client_context(ca.cert)
        with socket.create_connection((HOST, gw.port), timeout=5) as raw:
            with ctx13.wrap_socket(raw, server_hostname="gw.test") as s:
                check_eq(s.version(), "TLSv1.3", "negotiated version")
    return "; ".join(exercised)


@test(timeout=60)
def certificate_reload_keeps_old_sessions():
    d = new_tmpdir("pki")
    ca = Ca(d)
    v1_cert, v1_key = ca.issue("gw-v1.test", dns=["gw.test"])
    v2_cert, v2_key = ca.issue("gw-v2.test", dns=["gw.test"])
    live_cert, live_key = os.path.join(d, "live.pem"), os.path.join(d, "live.key")
    shutil.copy(v1_cert, live_cert)
    shutil.copy(v1_key, live_key)
    ctx = client_context(ca.cert)
    with Backend("echo", id="b1") as b, \
            Wsgate(gateway_config([tls_listener(live_cert, live_key)],
                                  [{"name": "main", "backends": [b]}])) as gw:
        check_eq(peer_common_name(gw.port, "gw.test", ca.cert), "gw-v1.test", "certificate before reload")

        async def go():
            async with wss(gw.port, ctx, "gw.test") as old:
                await old.send("before")
                check_eq(await old.recv(), "before", "old session echo")
                shutil.copy(v2_cert, live_cert)
                shutil.copy(v2_key, live_key)
                gw.reload()
                reloaded = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: wait_until(lambda: "reloaded" in gw.error_log(), 10))
                check(reloaded, "no 'reloaded' line in the error log after SIGHUP")
                cn = await asyncio.get_running_loop().run_in_executor(
                    None, peer_common_name, gw.port, "gw.test", ca.cert)
                check_eq(cn, "gw-v2.test", "certificate of a new handshake after reload")
                async with wss(gw.port, ctx, "gw.test") as new:
                    await new.send("new")
                    check_eq(await new.recv(), "new", "new session echo")
                for i in range(5):
                    await old.send(f"after {i}")
                    check_eq(await old.recv(), f"after {i}", "old session echo after reload")

        run_async(go(), timeout=30)

        # A key that does not match the certificate: the reload fails as a
        # whole and the previous certificate keeps being served.
        shutil.copy(v1_key, live_key)
        gw.reload()
        failed = wait_until(lambda: "reload failed" in gw.error_log(), 10)
        check(failed, "no 'reload failed' line after a mismatched key")
        line = next(l for l in gw.error_log().splitlines() if "reload failed" in l)
        check("listener[0].tls" in line, f"reload failure does not name listener[0].tls: {line}")
        check_eq(peer_common_name(gw.port, "gw.test", ca.cert), "gw-v2.test",
                 "certificate after a failed reload")
        return "failed reload: " + line.split("listener[0].tls: ", 1)[-1].split(": ", 1)[-1][:80]


def backend_tls_pool(backend, ca_cert, server_name, verify=True):
    return {"name": "main", "backends": [{"address": backend.address, "tls": True}],
            "tls": {"ca": ca_cert, "verify": verify, "server_name": server_name}}


@test(timeout=60)
def backend_tls_verified():
    d = new_tmpdir("pki")
    ca = Ca(d)
    cert, key = ca.issue("backend.test", dns=["backend.test"], ips=[HOST])
    with TlsBackend(cert, key, id="tb1") as b:
        # Verified by name (SNI + host name check).
        with Wsgate(gateway_config(pools=[backend_tls_pool(b, ca.cert, "backend.test")])) as gw:
            async def go():
                async with ws_connect(gw.port) as ws:
                    await ws.send("whoami")
                    who = await ws.recv()
                    await ws.send("headers")
                    return who, json.loads(await ws.recv())
            who, headers = run_async(go())
            check_eq(who, "id:tb1", "answer through a TLS back end")
            check_eq(headers.get("x-forwarded-proto"), "http", "X-Forwarded-Proto (plain listener)")
            entry = gw.access_log_entries(wait_for=1)[0]
            check_eq(entry["status"], 101, "access-log status")
            check_eq(entry["backend"], b.address, "access-log back end")
        # server_name "" verifies the back end's IP address (SAN IP:127.0.0.1).
        with Wsgate(gateway_config(pools=[backend_tls_pool(b, ca.cert, "")])) as gw:
            async def go2():
                async with ws_connect(gw.port) as ws:
                    await ws.send("by ip")
                    return await ws.recv()
            check_eq(run_async(go2()), "by ip", "echo through a back end verified by IP")


def expect_502_verify_failure(pool, what):
    with Wsgate(gateway_config(pools=[pool], timeouts={"connect": "2s"})) as gw:
        status, headers, body = raw_request(gw.port, upgrade_head("/", f"{HOST}:{gw.port}"), timeout=10)
        check_eq(status, 502, f"{what}: status")
        logged = wait_until(lambda: "certificate verify failed" in gw.error_log(), 5)
        check(logged, f"{what}: no 'certificate verify failed' in the error log: {gw.error_log()[-400:]}")
        line = next(l for l in gw.error_log().splitlines() if "certificate verify failed" in l)
        check("TLS: certificate verify failed" in line, f"{what}: log line format: {line}")
        entry = gw.access_log_entries(wait_for=1)[0]
        check_eq(entry["status"], 502, f"{what}: access-log status")
        return line


@test(timeout=60)
def backend_bad_certificate_502():
    d = new_tmpdir("pki")
    ca = Ca(d, "trusted CA")
    rogue = Ca(d, "rogue CA")
    rogue_cert, rogue_key = rogue.issue("backend.test", dns=["backend.test"], ips=[HOST],
                                        basename="rogue-backend")
    wrong_cert, wrong_key = ca.issue("other.test", dns=["other.test"], basename="wrong-name")
    lines = []
    with TlsBackend(rogue_cert, rogue_key, id="rogue") as b:
        lines.append(expect_502_verify_failure(backend_tls_pool(b, ca.cert, "backend.test"),
                                               "certificate from another CA"))
        # verify = false: the same back end is accepted.
        with Wsgate(gateway_config(pools=[backend_tls_pool(b, ca.cert, "backend.test", verify=False)])) as gw:
            async def go():
                async with ws_connect(gw.port) as ws:
                    await ws.send("unverified")
                    return await ws.recv()
            check_eq(run_async(go()), "unverified", "echo with verify = false")
    with TlsBackend(wrong_cert, wrong_key, id="wrongname") as b:
        lines.append(expect_502_verify_failure(backend_tls_pool(b, ca.cert, "backend.test"),
                                               "certificate for another name"))
        lines.append(expect_502_verify_failure(backend_tls_pool(b, ca.cert, ""),
                                               "certificate without the back end's IP"))
    return " / ".join(l.split("TLS: ", 1)[-1][:80] for l in lines)



def tls_upgrade(port, ctx, server_hostname="gw.test", request=True):
    """(status, TLS socket): a TLS connection to <port> that sends an upgrade
    request (unless not <request>) and reads the first response head."""
    sock = ctx.wrap_socket(socket.create_connection((HOST, port), timeout=5), server_hostname=server_hostname)
    if request:
        sock.sendall(upgrade_head("/", f"{HOST}:{port}"))
    head, _ = read_head(sock, 5)
    status_line, _ = parse_head(head)
    return int(status_line[1]), sock


@test(timeout=60)
def max_connections_503_inside_tls():
    """Over server.max_connections a TLS client gets a real 503 inside TLS
    (at most 64 such refusals per worker at a time, then a plain close); the
    refusals never hold a slot, so closing a session lets the next one in."""
    d = new_tmpdir("pki")
    ca = Ca(d)
    cert, key = ca.issue("gw.test", dns=["gw.test"])
    with Backend("echo", id="b1") as b:
        conf = gateway_config([tls_listener(cert, key)], [{"name": "main", "backends": [b]}])
        conf = conf.replace("max_connections = 100000", "max_connections = 2")
        check("max_connections = 2" in conf, "max_connections not set in the test configuration")
        with Wsgate(conf) as gw:
            ctx = client_context(ca.cert)
            held = []
            try:
                for i in range(2):
                    status, sock = tls_upgrade(gw.port, ctx)
                    held.append(sock)
                    check_eq(status, 101, f"session {i + 1} within max_connections = 2")
                def fd_count():
                    return len(os.listdir(f"/proc/{gw.pid}/fd"))
                held_fds = fd_count()
                # The 503 comes as soon as TLS is up, before any request.
                for what, request in (("without a request", False), ("with a request", True)):
                    status, sock = tls_upgrade(gw.port, ctx, request=request)
                    sock.close()
                    check_eq(status, 503, f"third TLS client {what}")
                # 64 connections stuck before their ClientHello fill the refusal
                # slots: the next one is closed at once, without TLS.
                # The two refusals end (after their lingering close) first.
                check(wait_until(lambda: fd_count() == held_fds, 5), "the two refusals were not closed")
                stuck = [socket.create_connection((HOST, gw.port), timeout=5) for _ in range(64)]
                try:
                    # All 64 must be accepted (hold a slot) before the 65th comes.
                    check(wait_until(lambda: fd_count() >= held_fds + 64, 10),
                          "the 64 stuck connections were not all accepted")
                    extra = socket.create_connection((HOST, gw.port), timeout=3)
                    try:
                        check_eq(extra.recv(1), b"", "65th refusal: closed without a TLS handshake")
                    finally:
                        extra.close()
                finally:
                    for s in stuck:
                        s.close()
                check(wait_until(lambda: _status_or_none(gw.port, ctx) == 503, 5),
                      "no 503 once the stuck connections closed")
                # Closing a session frees its slot at once: refusals hold none.
                held.pop().close()
                check(wait_until(lambda: _status_or_none(gw.port, ctx, keep=held) == 101, 5),
                      "no session admitted after one closed")
                # Like a plain listener's 503 at accept, the refusals write no access-log line.
                entries = gw.access_log_entries(wait_for=0)
                check_eq(sorted({e["status"] for e in entries}), [101], "access-log statuses")
            finally:
                for s in held:
                    s.close()
            return "TLS clients told 503; the 65th concurrent refusal closed"


def _status_or_none(port, ctx, keep=None):
    """The status a new TLS client gets (None on a TLS or socket failure);
    a 101 socket goes to <keep>, any other is closed."""
    try:
        status, sock = tls_upgrade(port, ctx)
    except (OSError, HarnessError):
        return None
    if status == 101 and keep is not None:
        keep.append(sock)
    else:
        sock.close()
    return status


if __name__ == "__main__":
    main()
