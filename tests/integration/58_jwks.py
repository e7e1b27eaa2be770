"""JWK Sets (issue 19): route keys from a JWK Set file or an identity
provider's HTTPS endpoint, followed through rotation and outages; alg
confusion refused; sessions closed when their token expires; open sessions
limited per verified subject.

The identity provider is a Python http.server behind TLS (a throwaway CA
given to wsgate as tls_ca) in this process, serving a JWK Set the test
rotates. Tokens and JWKs are made with /usr/bin/python3's `cryptography`
(RSA and EC keys, JWK export, signing), independently of wsgate's code."""

import base64
import json
import os
import re
import socket
import ssl
import threading
import time
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes, hmac as chmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from harness import (HOST, OP_CLOSE, OP_TEXT, Backend, FrameSocket, Wsgate, check, check_eq,
                     free_port, http_get, main, port_is_listening, new_tmpdir, parse_close, parse_head,
                     read_head, test, upgrade_head, wait_until, new_key)
from tlsutil import Ca, gateway_config, raw_upgrade

ISSUER = "https://idp.test/realms/chat"
AUDIENCE = "chat"


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(n, length=None):
    return b64u(n.to_bytes(length or (n.bit_length() + 7) // 8, "big"))


class Key:
    """A signing key made by `cryptography`: RSA 2048 or EC P-256/P-384."""

    def __init__(self, kind, kid):
        self.kind, self.kid = kind, kid
        if kind == "RSA":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.private = ec.generate_private_key(ec.SECP256R1() if kind == "P-256" else ec.SECP384R1())

    def jwk(self, with_kid=True):
        pub = self.private.public_key().public_numbers()
        if self.kind == "RSA":
            j = {"kty": "RSA", "use": "sig", "n": uint(pub.n), "e": uint(pub.e)}
        else:
            size = 32 if self.kind == "P-256" else 48
            j = {"kty": "EC", "crv": self.kind, "x": uint(pub.x, size), "y": uint(pub.y, size)}
        if with_kid and self.kid:
            j["kid"] = self.kid
        return j

    def public_pem(self):
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, alg, data):
        if alg in ("RS256", "PS256"):
            pad = padding.PKCS1v15() if alg == "RS256" else padding.PSS(
                mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            return self.private.sign(data, pad, hashes.SHA256())
        h, size = (hashes.SHA256(), 32) if alg == "ES256" else (hashes.SHA384(), 48)
        r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(h)))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")

    def natural_alg(self):
        return "RS256" if self.kind == "RSA" else "ES256" if self.kind == "P-256" else "ES384"

    def token(self, alg=None, kid=True, header_extra=None, **claims):
        """A token signed with this key; <alg> names the header's alg (the
        signature is made with it, or with the key's own algorithm when the
        header lies about it)."""
        alg = alg or self.natural_alg()
        header = {"alg": alg, "typ": "JWT"}
        if kid:
            header["kid"] = self.kid
        header.update(header_extra or {})
        fits = alg in {"RSA": ("RS256", "PS256"), "P-256": ("ES256",), "P-384": ("ES384",)}[self.kind]
        sign_alg = alg if fits else self.natural_alg()
        return sign_token(header, claims_of(**claims), lambda data: self.sign(sign_alg, data))


def claims_of(**overrides):
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def sign_token(header, claims, signer):
    data = (b64u(json.dumps(header, separators=(",", ":")).encode()) + "." +
            b64u(json.dumps(claims, separators=(",", ":")).encode()))
    return data + "." + b64u(signer(data.encode()))


def jwks(*keys, with_kid=True):
    return json.dumps({"keys": [k.jwk(with_kid) for k in keys]})


class Idp:
    """An HTTPS server on 127.0.0.1 serving <document> at /certs, with a
    certificate for IP 127.0.0.1 from <ca>. `requests` counts GETs."""

    def __init__(self, ca, port=0):
        self.document = json.dumps({"keys": []})
        self.requests = 0
        self.lock = threading.Lock()
        cert, key = ca.issue("idp.test", ips=["127.0.0.1"], basename=f"idp-{id(self)}")
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with idp.lock:
                    idp.requests += 1
                    body = idp.document.encode()
                self.send_response(200 if self.path == "/certs" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((HOST, port), Handler)
        # A client that hangs up mid-handshake (wsgate refusing the
        # certificate of the wrong CA) is expected here, not a traceback.
        self.server.handle_error = lambda request, address: None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"https://{HOST}:{self.port}/certs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, document):
        with self.lock:
            self.document = document

    def count(self):
        with self.lock:
            return self.requests

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def route(path_prefix, **auth):
    settings = {"issuer": ISSUER, "audience": AUDIENCE}
    settings.update(auth)
    return {"path_prefix": path_prefix, "pool": "main", "auth": settings}


def with_admin(conf):
    port = free_port()
    return conf + f'\n[admin]\nlisten = "{HOST}:{port}"\n', port


def started(gw, admin_port):
    """<gw> once its admin listener answers too (the harness's readiness
    check may see the main listener first)."""
    check(wait_until(lambda: port_is_listening(admin_port), 10), f"admin listener: {gw.diagnostics()}")
    return gw


def metric(admin_port, name, labels):
    """The value of sample <name>{<labels>} on /metrics, or 0."""
    _, _, body = http_get(admin_port, "/metrics")
    want = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else name
    for line in body.decode().splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def status_of(port, token, path="/"):
    """(status, WWW-Authenticate) of one upgrade with <token> as bearer; a
    session that opens is closed at once."""
    extra = [("Authorization", "Bearer " + token)] if token is not None else []
    status, headers, sock, _ = raw_upgrade(port, path=path, extra=extra, timeout=10)
    sock.close()
    return status, headers.get("www-authenticate", "")


def description(www_authenticate):
    m = re.search(r'error_description="([^"]*)"', www_authenticate)
    return m.group(1) if m else ""


def expect(port, token, path, status, reason=None, what=""):
    """Checks one upgrade's answer; returns how long it took (s)."""
    began = time.monotonic()
    got, www = status_of(port, token, path)
    took = time.monotonic() - began
    check_eq(got, status, f"{what}: status")
    if reason is not None:
        check_eq(description(www), reason, f"{what}: error_description")
    return took


# A handshake whose kid is unknown is held for the refetch at most
# min(timeouts.handshake, 2 s); one refused without waiting (the 30 s floor
# holds the refetch back) answers well within it, even on a loaded machine.
HOLD_BOUND = 2.0
AT_ONCE = 1.0


@test(timeout=60)
def jwks_url_rotation_and_outage():
    """Two routes on one identity provider: /p refetches every 2 s, /k every
    5 minutes (so only an unknown kid makes it refetch). Rotation reaches /p
    by its refresh and /k at the first token with the new kid; removed keys
    are refused; the IdP going down keeps the last set."""
    d = new_tmpdir("jwks")
    ca = Ca(d)
    a, b, e = Key("RSA", "rsa-a"), Key("RSA", "rsa-b"), Key("P-256", "ec-e")
    idp = Idp(ca)
    idp.serve(jwks(a, e))
    with ExitStack() as stack:
        stack.callback(idp.stop)
        backend = stack.enter_context(Backend("echo", id="b1"))
        conf, admin = with_admin(gateway_config(pools=[{"name": "main", "backends": [backend]}], routes=[
            route("/p", jwks_url=idp.url, jwks_refresh="2s", tls_ca=ca.cert),
            route("/k", jwks_url=idp.url, jwks_refresh="5m", tls_ca=ca.cert, algorithms=["RS256", "ES256"])]))
        gw = started(stack.enter_context(Wsgate(conf)), admin)
        check(wait_until(lambda: metric(admin, "wsgate_jwks_keys", {"route": "/p"}) == 2 and
                         metric(admin, "wsgate_jwks_keys", {"route": "/k"}) == 2, 10),
              f"first fetch: {gw.diagnostics()}")
        for path in ("/p", "/k"):
            expect(gw.port, a.token(), path, 101, what=f"{path} RSA token with kid")
            expect(gw.port, e.token(), path, 101, what=f"{path} EC token with kid")
            expect(gw.port, a.token(kid=False), path, 101, what=f"{path} RSA token without kid")
            expect(gw.port, e.token(kid=False), path, 101, what=f"{path} EC token without kid")
            # Held for the refetch it triggers, whose set lacks rsa-b too: 401
            # once that fetch lands, within the bound.
            took = expect(gw.port, b.token(), path, 401, "unknown signing key", f"{path} token of a key not yet published")
            check(took < HOLD_BOUND + AT_ONCE, f"{path}: refusal after the refetch took {took:.2f}s")
            expect(gw.port, a.token(sub="bob", exp=int(time.time()) - 60), path, 401, "token expired",
                   f"{path} expired")
        # rsa-b's unknown kid made /k refetch (the set had not changed yet):
        # wait for that fetch, so that /k's set predates the rotation.
        check(wait_until(lambda: metric(admin, "wsgate_jwks_fetches_total", {"route": "/k", "result": "ok"}) == 2, 5),
              "/k did not refetch for an unknown kid")
        # Rotate: rsa-a is removed, rsa-b published.
        offset = gw.error_log_offset()
        rotated = time.monotonic()
        idp.serve(jwks(b, e))
        check(gw.wait_error_log(r"route /p: JWK Set fetched .*rsa-b", timeout=8, since=offset),
              f"/p never fetched the rotated set: {gw.diagnostics()}")
        periodic = time.monotonic() - rotated
        # No token was shown to /p since: its refresh alone brought rsa-b.
        expect(gw.port, b.token(), "/p", 101, what="/p new key after the periodic refresh")
        took = expect(gw.port, a.token(), "/p", 401, "unknown signing key", "/p removed key")
        check(took < AT_ONCE, f"/p removed key within the 30 s floor: refused after {took:.2f}s, not at once")
        expect(gw.port, a.token(kid=False), "/p", 401, "bad signature", "/p removed key without kid")
        # /k keeps its set (5 min refresh): its unknown-kid refetch was
        # used a moment ago, and the 30 s floor holds the next one back.
        expect(gw.port, a.token(), "/k", 101, what="/k still on its last set")
        took = expect(gw.port, b.token(), "/k", 401, "unknown signing key", "/k within the 30 s floor")
        check(took < AT_ONCE, f"/k within the 30 s floor: refused after {took:.2f}s, not at once")
        time.sleep(0.5)
        check_eq(metric(admin, "wsgate_jwks_fetches_total", {"route": "/k", "result": "ok"}), 2.0,
                 "/k fetches within the floor")

        # The IdP goes down: /p's refreshes fail, the last set stays.
        errors_before = metric(admin, "wsgate_jwks_fetches_total", {"route": "/p", "result": "error"})
        idp.stop()  # stopping again at the end is harmless
        check(wait_until(lambda: metric(admin, "wsgate_jwks_fetches_total",
                                        {"route": "/p", "result": "error"}) > errors_before, 10),
              "no failed fetch counted after the IdP went down")
        expect(gw.port, b.token(), "/p", 101, what="/p new key with the IdP down")
        expect(gw.port, e.token(), "/p", 101, what="/p EC key with the IdP down")
        check(gw.wait_error_log(r"route /p: JWK Set https://127\.0\.0\.1:\d+/certs failed: .*keeping the last good set",
                                timeout=2), f"outage not logged: {gw.diagnostics()}")
        failures = metric(admin, "wsgate_auth_failures_total", {"route": "/p", "reason": "unknown signing key"})
        check(failures >= 2, f"auth failures by reason: {failures}")
        return f"rotation reached /p (refresh 2s) in {periodic:.2f}s; outage kept the last set"


@test(timeout=60)
def jwks_url_unknown_kid_refetches_at_once():
    """A route with a 5-minute refresh: a token with a kid the set lacks
    makes wsgate refetch at once (the first time; later ones at most every
    30 s), and its handshake is held until that fetch lands: the first
    token signed with the rotated-in key is accepted. Unknown kids within
    the floor are refused at once, with no fetch."""
    d = new_tmpdir("jwks")
    ca = Ca(d)
    old, new = Key("RSA", "2026-01"), Key("P-256", "2026-02")
    idp = Idp(ca)
    idp.serve(jwks(old))
    with ExitStack() as stack:
        stack.callback(idp.stop)
        backend = stack.enter_context(Backend("echo", id="b1"))
        conf, admin = with_admin(gateway_config(pools=[{"name": "main", "backends": [backend]}], routes=[
            route("/", jwks_url=idp.url, jwks_refresh="5m", tls_ca=ca.cert)]))
        gw = started(stack.enter_context(Wsgate(conf)), admin)
        check(wait_until(lambda: metric(admin, "wsgate_jwks_keys", {"route": "/"}) == 1, 10), "first fetch")
        plain = expect(gw.port, old.token(), "/", 101, what="old key")
        fetched = idp.count()
        idp.serve(jwks(old, new))
        held = expect(gw.port, new.token(), "/", 101, what="first token with the new kid, held for the refetch")
        check(held < HOLD_BOUND, f"held {held:.2f}s (bound {HOLD_BOUND}s)")
        check_eq(idp.count(), fetched + 1, "IdP requests for the unknown kid")
        expect(gw.port, new.token(sub="bob"), "/", 101, what="new kid once the set holds it")
        # Within the 30 s floor, more unknown kids do not make it fetch again,
        # and are refused without waiting.
        stranger = Key("RSA", "nobody")
        slowest = 0.0
        for _ in range(5):
            took = expect(gw.port, stranger.token(), "/", 401, "unknown signing key", "unknown kid within the floor")
            slowest = max(slowest, took)
        check(slowest < AT_ONCE, f"unknown kid within the floor refused after {slowest:.2f}s, not at once")
        time.sleep(0.6)
        check_eq(idp.count(), fetched + 1, "IdP requests after 5 unknown kids within 30 s")
        return (f"first new-kid handshake held {held * 1000:.0f} ms and accepted (a known kid: {plain * 1000:.0f} ms); "
                f"5 unknown kids within the floor: 401 in <= {slowest * 1000:.0f} ms, no fetch")


class BlackHole:
    """A TCP listener on <port> that never accepts: connections complete in
    the kernel's backlog and nothing is ever answered (an IdP that hangs)."""

    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, port))
        self.sock.listen(16)

    def close(self):
        self.sock.close()


def held_upgrade(port, token, path):
    """Sends an upgrade with <token> and checks that no answer comes within
    0.3 s (the handshake is held); returns the socket."""
    sock = socket.create_connection((HOST, port), timeout=5)
    sock.sendall(upgrade_head(path, f"{HOST}:{port}", new_key(), extra=[("Authorization", "Bearer " + token)]))
    sock.settimeout(0.3)
    try:
        data = sock.recv(4096)
    except socket.timeout:
        data = None
    check(data is None, f"{path}: expected the handshake held, got {data!r}")
    return sock


@test(timeout=60)
def jwks_url_unknown_kid_hold_bounded():
    """An unknown kid whose refetch cannot bring its key still gets 401:
    at once when the IdP refuses the connection, after the 2 s bound when
    the IdP hangs. A client leaving while held is cleaned up; SIGTERM ends
    held handshakes and wsgate exits."""
    d = new_tmpdir("jwks")
    ca = Ca(d)
    known, unknown = Key("RSA", "known"), Key("RSA", "rotated-in")
    down_idp, hang_idp = Idp(ca), Idp(ca)
    for idp in (down_idp, hang_idp):
        idp.serve(jwks(known))
    with ExitStack() as stack:
        stack.callback(down_idp.stop)
        stack.callback(hang_idp.stop)
        backend = stack.enter_context(Backend("echo", id="b1"))
        conf, admin = with_admin(gateway_config(pools=[{"name": "main", "backends": [backend]}], routes=[
            route("/down", jwks_url=down_idp.url, jwks_refresh="5m", tls_ca=ca.cert),
            route("/hang", jwks_url=hang_idp.url, jwks_refresh="5m", tls_ca=ca.cert)]))
        gw = started(stack.enter_context(Wsgate(conf)), admin)
        check(wait_until(lambda: metric(admin, "wsgate_jwks_keys", {"route": "/down"}) == 1 and
                         metric(admin, "wsgate_jwks_keys", {"route": "/hang"}) == 1, 10), "first fetches")
        # Both IdPs go away (stop() may be called again): one refuses
        # connections, the other hangs.
        down_idp.stop()
        hang_idp.stop()
        hole = BlackHole(hang_idp.port)
        stack.callback(hole.close)

        errors = metric(admin, "wsgate_jwks_fetches_total", {"route": "/down", "result": "error"})
        down = expect(gw.port, unknown.token(), "/down", 401, "unknown signing key", "IdP refusing connections")
        check(down < HOLD_BOUND, f"IdP down: refused after {down:.2f}s, not when the fetch failed")
        check_eq(metric(admin, "wsgate_jwks_fetches_total", {"route": "/down", "result": "error"}), errors + 1,
                 "failed fetches for the unknown kid")
        expect(gw.port, known.token(), "/down", 101, what="last set kept with the IdP down")

        hung = expect(gw.port, unknown.token(), "/hang", 401, "unknown signing key", "IdP hanging")
        check(HOLD_BOUND - 0.1 <= hung <= HOLD_BOUND + AT_ONCE, f"IdP hanging: refused after {hung:.2f}s")

        # The hung fetch is still in flight (10 s timeout): new unknown kids
        # are held for it too. A client that leaves while held is cleaned up.
        sock = held_upgrade(gw.port, unknown.token(sub="leaver"), "/hang")
        sock.close()
        check(wait_until(lambda: any(e.get("reason") == "client closed" and e.get("path") == "/hang"
                                     for e in gw.access_log_entries(wait_for=0, timeout=0)), 5),
              f"no access-log line for the client that left while held: {gw.access_log_lines(0, 0)}")
        expect(gw.port, known.token(), "/hang", 101, what="known kid while another handshake is held")

        # SIGTERM while a handshake is held: it ends, and wsgate exits.
        sock = held_upgrade(gw.port, unknown.token(sub="stays"), "/hang")
        stack.callback(sock.close)
        stopping = time.monotonic()
        code = gw.stop(timeout=10)
        stopped = time.monotonic() - stopping
        check_eq(code, 0, "wsgate exit status after SIGTERM with a held handshake")
        check(stopped < HOLD_BOUND, f"SIGTERM with a held handshake: exit after {stopped:.2f}s")
        sock.settimeout(2)
        try:
            rest = sock.recv(4096)
        except OSError:
            rest = b""
        check_eq(rest, b"", "held client after SIGTERM: closed without an answer")
        report = gw.sanitizer_report()
        check(not report, f"sanitizer report: {report}")
        return (f"IdP refusing: 401 after {down * 1000:.0f} ms; IdP hanging: 401 after {hung:.2f}s (bound); "
                f"client leaving while held cleaned up; SIGTERM while held: exit in {stopped:.2f}s")


@test(timeout=40)
def jwks_url_down_at_start_and_bad_certificate():
    """wsgate starts with the IdP unreachable: tokens get 401 "signing keys
    unavailable" until a fetch succeeds. A route whose IdP certificate is
    not from its tls_ca never gets keys."""
    d = new_tmpdir("jwks")
    ca, other_ca = Ca(d, "jwks CA"), Ca(d, "unrelated CA")
    key = Key("RSA", "k1")
    port = free_port()
    with ExitStack() as stack:
        backend = stack.enter_context(Backend("echo", id="b1"))
        url = f"https://{HOST}:{port}/certs"
        conf, admin = with_admin(gateway_config(pools=[{"name": "main", "backends": [backend]}], routes=[
            route("/good", jwks_url=url, tls_ca=ca.cert), route("/bad", jwks_url=url, tls_ca=other_ca.cert)]))
        gw = started(stack.enter_context(Wsgate(conf)), admin)
        expect(gw.port, key.token(), "/good", 401, "signing keys unavailable", "IdP down at start")
        check(wait_until(lambda: metric(admin, "wsgate_jwks_fetches_total",
                                        {"route": "/good", "result": "error"}) >= 1, 5), "failed fetch counted")
        idp = Idp(ca, port=port)
        stack.callback(idp.stop)
        idp.serve(jwks(key))
        up_at = time.monotonic()
        check(wait_until(lambda: status_of(gw.port, key.token(), "/good")[0] == 101, 12),
              f"keys never arrived after the IdP came up: {gw.diagnostics()}")
        recovered = time.monotonic() - up_at
        expect(gw.port, key.token(), "/bad", 401, "signing keys unavailable", "IdP certificate from another CA")
        check(re.search(r"route /bad: JWK Set .* failed: TLS", gw.error_log()),
              f"TLS failure not logged: {gw.diagnostics()}")
        return f"keys fetched {recovered:.2f}s after the IdP came up (retry every 5 s)"


@test(timeout=40)
def jwks_file_replaced_while_running():
    """jwks_file replaced atomically (rename): the new key works without a
    reload, the old one is refused; a broken file keeps the last set."""
    d = new_tmpdir("jwks")
    first, second = Key("RSA", "one"), Key("P-384", "two")
    path = os.path.join(d, "jwks.json")
    with open(path, "w") as f:
        f.write(jwks(first))

    def replace(text):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    with ExitStack() as stack:
        backend = stack.enter_context(Backend("echo", id="b1"))
        gw = stack.enter_context(Wsgate(gateway_config(pools=[{"name": "main", "backends": [backend]}],
                                                       routes=[route("/", jwks_file=path)])))
        expect(gw.port, first.token(), "/", 101, what="first key")
        expect(gw.port, second.token(), "/", 401, "unknown signing key", "second key before the replace")
        replace(jwks(second))
        started = time.monotonic()
        check(wait_until(lambda: status_of(gw.port, second.token())[0] == 101, 5),
              f"replaced file not picked up: {gw.diagnostics()}")
        latency = time.monotonic() - started
        expect(gw.port, first.token(), "/", 401, "unknown signing key", "first key after the replace")
        offset = gw.error_log_offset()
        replace("{\"keys\": [")
        check(gw.wait_error_log(r"JWK Set .*jwks\.json failed: .*keeping the last good set", timeout=5, since=offset),
              f"broken file not reported: {gw.diagnostics()}")
        expect(gw.port, second.token(), "/", 101, what="last good set kept over a broken file")
        return f"replaced file in force after {latency:.2f}s"


@test(timeout=40)
def alg_confusion_refused():
    """none, HS256 keyed with the RSA public key, and jku/x5u headers that
    point at an attacker's key set are all refused, and wsgate never
    contacts the URL they name. PS256 and ES384 tokens verify."""
    d = new_tmpdir("jwks")
    ca = Ca(d)
    good, p384, attacker = Key("RSA", "k1"), Key("P-384", "k384"), Key("RSA", "k1")
    path = os.path.join(d, "jwks.json")
    with open(path, "w") as f:
        f.write(jwks(good, p384))
    evil = Idp(ca)
    evil.serve(jwks(attacker))
    with ExitStack() as stack:
        stack.callback(evil.stop)
        backend = stack.enter_context(Backend("echo", id="b1"))
        gw = stack.enter_context(Wsgate(gateway_config(pools=[{"name": "main", "backends": [backend]}],
                                                       routes=[route("/", jwks_file=path)])))
        claims = claims_of()
        unsigned = sign_token({"alg": "none", "kid": "k1"}, claims, lambda data: b"")
        expect(gw.port, unsigned, "/", 401, "algorithm mismatch", "alg none")
        for secret, what in ((good.public_pem(), "PEM"), (json.dumps(good.jwk()).encode(), "JWK")):
            def mac(data, secret=secret):
                h = chmac.HMAC(secret, hashes.SHA256())
                h.update(data)
                return h.finalize()
            forged = sign_token({"alg": "HS256", "kid": "k1", "typ": "JWT"}, claims, mac)
            expect(gw.port, forged, "/", 401, "algorithm mismatch", f"HS256 keyed with the RSA public key ({what})")
        for header in ({"jku": evil.url}, {"x5u": evil.url}, {"jwk": attacker.jwk()}):
            expect(gw.port, attacker.token(header_extra=header), "/", 401, "bad signature",
                   f"attacker's key named by {list(header)[0]}")
            expect(gw.port, good.token(header_extra=header), "/", 101, what=f"genuine token with {list(header)[0]}")
        check_eq(evil.count(), 0, "requests wsgate made to the jku/x5u URL")
        expect(gw.port, good.token(alg="PS256"), "/", 101, what="PS256")
        expect(gw.port, p384.token(), "/", 101, what="ES384 on P-384")
        expect(gw.port, p384.token(alg="ES256"), "/", 401, "unknown signing key", "ES256 header on a P-384 key")
        return "none, HS256-with-public-key, jku, x5u, jwk refused; PS256, ES384 accepted"


def open_session(port, token, path="/", tls_ctx=None):
    sock = socket.create_connection((HOST, port), timeout=5)
    if tls_ctx is not None:
        sock = tls_ctx.wrap_socket(sock, server_hostname="gw.test")
    key = new_key()
    sock.sendall(upgrade_head(path, f"{HOST}:{port}", key,
                              extra=[("Authorization", "Bearer " + token)]))
    head, leftover = read_head(sock, 5)
    status_line, headers = parse_head(head)
    return int(status_line[1]), headers, FrameSocket(sock, leftover, mask=True)


@test(timeout=40)
def close_on_expiry_over_http_and_tls():
    """A token expiring 2 s from now: the open session is closed at its exp
    with 1008 "token expired" to the client and 1001 to the back end, over a
    plain and a TLS listener; the access log says "token expired"."""
    d = new_tmpdir("jwks")
    ca = Ca(d)
    cert, tls_key = ca.issue("gw.test", dns=["gw.test"])
    key = Key("P-256", "k1")
    path = os.path.join(d, "jwks.json")
    with open(path, "w") as f:
        f.write(jwks(key))
    tls_port = free_port()
    with ExitStack() as stack:
        backend = stack.enter_context(Backend("echo", id="b1"))
        gw = stack.enter_context(Wsgate(gateway_config(
            listeners=[{"listen": f"{HOST}:@PORT@"},
                       {"listen": f"{HOST}:{tls_port}", "tls": {"cert": cert, "key": tls_key}}],
            pools=[{"name": "main", "backends": [backend]}],
            routes=[route("/", jwks_file=path, close_on_expiry=True)])))
        ctx = ssl.create_default_context(cafile=ca.cert)
        results = []
        for port, ctx_or_none, what in ((gw.port, None, "HTTP/1.1"), (tls_port, ctx, "TLS")):
            exp = int(time.time()) + 3
            # exp is whole seconds: wait until it is 2 s ahead.
            while time.time() < exp - 2:
                time.sleep(0.01)
            status, _, ws = open_session(port, key.token(exp=exp, sub=f"user-{what}"), tls_ctx=ctx_or_none)
            check_eq(status, 101, f"{what}: handshake")
            ws.send_text("before expiry")
            check_eq(ws.recv_message(timeout=5), (OP_TEXT, b"before expiry"), f"{what}: echo before expiry")
            frame = ws.recv_message(timeout=6)
            closed_at = time.time()
            check(frame is not None and frame[0] == OP_CLOSE, f"{what}: expected a close frame, got {frame!r}")
            check_eq(parse_close(frame[1]), (1008, "token expired"), f"{what}: close frame")
            late = closed_at - exp
            check(-0.05 <= late <= 1.0, f"{what}: closed {late:+.3f}s from exp")
            results.append(f"{what} {late:+.3f}s")
            ws.send_close(1008)
            ws.sock.close()
        closes = backend.close_events(wait_for=2, timeout=5)
        check_eq([c["code"] for c in closes], [1001, 1001], "back-end close codes")
        entries = gw.access_log_entries(wait_for=2)
        check_eq([e["reason"] for e in entries if e["status"] == 101], ["token expired"] * 2, "access-log reasons")
        return "closed at exp: " + ", ".join(results)


@test(timeout=40)
def max_sessions_per_subject_three():
    """max_sessions_per_subject = 3: alice's fourth session gets 429 with
    Retry-After while bob, from the same address, is admitted; closing one
    of alice's sessions admits her next."""
    d = new_tmpdir("jwks")
    key = Key("RSA", "k1")
    path = os.path.join(d, "jwks.json")
    with open(path, "w") as f:
        f.write(jwks(key))
    with ExitStack() as stack:
        backend = stack.enter_context(Backend("echo", id="b1"))
        conf, admin = with_admin(gateway_config(
            pools=[{"name": "main", "backends": [backend]}],
            routes=[route("/", jwks_file=path, max_sessions_per_subject=3)]).replace("workers = 1", "workers = 2"))
        gw = started(stack.enter_context(Wsgate(conf)), admin)
        alice = []
        for i in range(3):
            status, _, ws = open_session(gw.port, key.token(sub="alice"))
            check_eq(status, 101, f"alice session {i + 1}")
            alice.append(ws)
        status, headers, ws = open_session(gw.port, key.token(sub="alice"))
        check_eq(status, 429, "alice's fourth session")
        check(headers.get("retry-after", "").isdigit(), f"Retry-After: {headers.get('retry-after')!r}")
        ws.sock.close()
        status, _, bob = open_session(gw.port, key.token(sub="bob"))
        check_eq(status, 101, "bob from the same address")
        alice[0].send_close(1000)
        alice[0].recv_message(timeout=5)
        alice[0].sock.close()
        check(wait_until(lambda: status_of(gw.port, key.token(sub="alice", exp=int(time.time()) + 1))[0] == 101, 5),
              "alice not admitted after closing one session")
        check_eq(metric(admin, "wsgate_subject_limit_refusals_total", {}), 1.0, "refusals counted")
        # A token without sub cannot be counted: refused.
        expect(gw.port, key.token(sub=None), "/", 401, "token has no subject", "no sub")
        for ws in alice[1:] + [bob]:
            ws.sock.close()
        return "4th of alice -> 429, bob admitted, close one -> admitted"


if __name__ == "__main__":
    main()
