"""Authentication at the handshake: JSON Web Tokens (RFC 7519) for HS256,
RS256 and ES256 (RFC 7518 section 3) checked before any back end is
contacted, 401 with WWW-Authenticate (RFC 6750 section 3), claims
forwarded as X-Auth-* with client-sent copies removed, pinning by claim,
and the Origin allowlist (RFC 6455 section 10.2)."""

import json
import os
import time
from contextlib import ExitStack

from harness import (HOST, Backend, Wsgate, check, check_eq, main, new_tmpdir,
                     raw_request, test, upgrade_head)
from tlsutil import (ask_backend, ec_keypair, gateway_config, rsa_keypair,
                     sign_jwt)

ISSUER = "https://issuer.test"
AUDIENCE = "chat"


class Keys:
    """Signing material for one algorithm: (key used to sign, key_file
    given to wsgate) for the right key and for an unrelated one."""

    def __init__(self, algorithm, directory):
        self.algorithm = algorithm
        if algorithm == "HS256":
            self.sign = os.urandom(24).hex().encode()          # 48 bytes
            self.other = os.urandom(24).hex().encode()
            self.key_file = os.path.join(directory, "hs256.secret")
            with open(self.key_file, "wb") as f:
                f.write(self.sign)
        elif algorithm == "RS256":
            self.sign, self.key_file = rsa_keypair(directory, "rsa")
            self.other, _ = rsa_keypair(directory, "rsa-other")
        else:
            self.sign, self.key_file = ec_keypair(directory, "ec")
            self.other, _ = ec_keypair(directory, "ec-other")

    def token(self, key=None, **overrides):
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "role": "admin",
                  "iat": now, "exp": now + 300}
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return sign_jwt(self.algorithm, claims, key or self.sign)


def auth_route(keys, pool="main", **auth):
    settings = {"algorithm": keys.algorithm, "key_file": keys.key_file, "issuer": ISSUER,
                "audience": AUDIENCE, "leeway": "5s", "forward_claims": ["sub", "role"]}
    settings.update(auth)
    return {"path_prefix": "/", "pool": pool, "auth": settings}


def bearer(token):
    return [("Authorization", "Bearer " + token)]


def upgrade(port, extra=(), path="/"):
    """(status, headers, body) of one upgrade request sent raw."""
    return raw_request(port, upgrade_head(path, f"{HOST}:{port}", extra=list(extra)), timeout=10)


def check_401(port, extra, reason, what):
    status, headers, _ = upgrade(port, extra)
    check_eq(status, 401, f"{what}: status")
    check_eq(headers.get("www-authenticate"),
             f'Bearer realm="wsgate", error="invalid_token", error_description="{reason}"',
             f"{what}: WWW-Authenticate")
    check_eq(headers.get("connection", "").lower(), "close", f"{what}: Connection")


def algorithm_case(algorithm):
    d = new_tmpdir("keys")
    keys = Keys(algorithm, d)
    with Backend("echo", id="b1") as b, \
            Wsgate(gateway_config(pools=[{"name": "main", "backends": [b]}],
                                  routes=[auth_route(keys)])) as gw:
        now = int(time.time())
        wrong_alg = "RS256" if algorithm != "RS256" else "ES256"
        other = Keys(wrong_alg, d)
        refusals = [
            ("no Authorization header", [], "missing token"),
            ("Basic credentials", [("Authorization", "Basic YWxpY2U6cHc=")], "missing token"),
            ("not a JWT", bearer("abc.def"), "malformed token"),
            ("signed by another key", bearer(keys.token(key=keys.other)), "bad signature"),
            ("signature of another token",
             bearer(keys.token().rsplit(".", 1)[0] + "." + keys.token(sub="bob").rsplit(".", 1)[1]),
             "bad signature"),
            (f"{wrong_alg} token", bearer(other.token()), "algorithm mismatch"),
            ("alg none", bearer(sign_jwt("HS256", {"sub": "x"}, b"k" * 32,
                                         header={"alg": "none"})), "algorithm mismatch"),
            ("expired", bearer(keys.token(exp=now - 60)), "token expired"),
            ("not yet valid", bearer(keys.token(nbf=now + 120)), "token not yet valid"),
            ("wrong issuer", bearer(keys.token(iss="https://evil.test")), "wrong issuer"),
            ("wrong audience", bearer(keys.token(aud="billing")), "wrong audience"),
            ("audience list without ours", bearer(keys.token(aud=["billing", "mail"])), "wrong audience"),
        ]
        for what, extra, reason in refusals:
            check_401(gw.port, extra, reason, f"{algorithm} {what}")
        check_eq(b.events("open"), [], f"{algorithm}: back-end sessions opened by refused tokens")

        # Valid tokens: exp within the leeway, aud as a list, and the plain one.
        # The clock is read again: generating the other keys and sending the
        # refusals above can take seconds on a loaded machine, and exp = now - 2
        # must still be within the 5 s leeway when it arrives.
        now = int(time.time())
        valid = [keys.token(), keys.token(exp=now - 2), keys.token(aud=["billing", AUDIENCE])]
        for token in valid:
            seen = json.loads(ask_backend(gw.port, "headers", extra=bearer(token)))
            check_eq(seen.get("x-auth-sub"), "alice", f"{algorithm}: X-Auth-Sub at the back end")
            check_eq(seen.get("x-auth-role"), "admin", f"{algorithm}: X-Auth-Role at the back end")
        entries = gw.access_log_entries(wait_for=len(refusals) + len(valid))
        refused = [e for e in entries if e["status"] == 401]
        check_eq(len(refused), len(refusals), f"{algorithm}: 401 lines in the access log")
        check_eq([e["reason"] for e in refused], [r for _, _, r in refusals],
                 f"{algorithm}: access-log reasons of the 401s")
        check(all(e["subject"] == "" and e["backend"] == "" for e in refused),
              f"{algorithm}: refused lines carry a subject or back end: {refused}")
        ok = [e for e in entries if e["status"] == 101]
        check_eq([e["subject"] for e in ok], ["alice"] * len(valid), f"{algorithm}: access-log subject")
        return f"{len(refusals)} refusals with their reasons, {len(valid)} valid tokens"


@test(timeout=60)
def jwt_hs256():
    return algorithm_case("HS256")


@test(timeout=60)
def jwt_rs256():
    return algorithm_case("RS256")


@test(timeout=60)
def jwt_es256():
    return algorithm_case("ES256")


@test
def token_from_cookie_and_query():
    d = new_tmpdir("keys")
    keys = Keys("HS256", d)
    for source, place in (("cookie:jwt", lambda t: ("/", [("Cookie", f"a=1; jwt={t}; b=2")])),
                          ("query:access_token", lambda t: (f"/ws?x=1&access_token={t}", []))):
        with Backend("echo", id="b1") as b, \
                Wsgate(gateway_config(pools=[{"name": "main", "backends": [b]}],
                                      routes=[auth_route(keys, token_from=source)])) as gw:
            path, extra = place(keys.token(sub="carol"))
            seen = json.loads(ask_backend(gw.port, "headers", path=path, extra=extra))
            check_eq(seen.get("x-auth-sub"), "carol", f"{source}: X-Auth-Sub")
            # A bearer header is not where this route looks.
            check_401(gw.port, bearer(keys.token()), "missing token", f"{source}: token in the header")
            path, extra = place(keys.token(sub="carol", exp=int(time.time()) - 60))
            status, headers, _ = raw_request(gw.port, upgrade_head(path, f"{HOST}:{gw.port}", extra=extra))
            check_eq(status, 401, f"{source}: expired token status")
            check("token expired" in headers.get("www-authenticate", ""),
                  f"{source}: WWW-Authenticate {headers.get('www-authenticate')!r}")


@test
def forged_auth_headers_stripped():
    d = new_tmpdir("keys")
    keys = Keys("HS256", d)
    with Backend("echo", id="b1") as b, \
            Wsgate(gateway_config(pools=[{"name": "main", "backends": [b]}],
                                  routes=[auth_route(keys)])) as gw:
        forged = [("X-Auth-Sub", "root"), ("x-auth-sub", "root2"), ("X-Auth-Role", "superuser")]
        seen = json.loads(ask_backend(gw.port, "headers",
                                      extra=bearer(keys.token()) + forged))
        check_eq(seen.get("x-auth-sub"), "alice", "X-Auth-Sub (forged copies must be gone)")
        check_eq(seen.get("x-auth-role"), "admin", "X-Auth-Role (forged copy must be gone)")
        # A token without the claim: the client's copy must still be dropped.
        seen = json.loads(ask_backend(gw.port, "headers",
                                      extra=bearer(keys.token(role=None)) + [("X-Auth-Role", "superuser")]))
        check_eq(seen.get("x-auth-role"), None, "X-Auth-Role forged while the token has no role claim")
        # Unrelated X-Auth-* headers that are not forwarded claims pass.
        seen = json.loads(ask_backend(gw.port, "headers",
                                      extra=bearer(keys.token()) + [("X-Auth-Other", "kept")]))
        check_eq(seen.get("x-auth-other"), "kept", "X-Auth-Other (not a forwarded claim)")


@test(timeout=60)
def claim_sub_pins_across_addresses():
    d = new_tmpdir("keys")
    keys = Keys("ES256", d)
    with ExitStack() as stack:
        backends = [stack.enter_context(Backend("echo", id=f"b{i}")) for i in (1, 2, 3)]
        gw = stack.enter_context(Wsgate(gateway_config(
            pools=[{"name": "main", "hash": "claim:sub", "backends": backends}],
            routes=[auth_route(keys)])))
        alice = keys.token(sub="alice")
        # 20 sessions from 20 client addresses, each with a freshly signed token.
        ids = set()
        for i in range(20):
            token = alice if i % 2 else keys.token(sub="alice", iat=int(time.time()) - i)
            ids.add(ask_backend(gw.port, "whoami", extra=bearer(token), source=f"127.0.0.{i + 2}"))
        check_eq(len(ids), 1, f"back ends for sub alice over 20 addresses ({ids})")
        spread = {ask_backend(gw.port, "whoami", extra=bearer(keys.token(sub=f"user-{k}")))
                  for k in range(30)}
        check(len(spread) >= 2, f"30 subjects from one address all went to {spread}")
        entries = gw.access_log_entries(wait_for=50)
        check_eq(sorted({e["subject"] for e in entries[:20]}), ["alice"], "logged subjects")
        check(all(not e["key_fallback"] for e in entries), "a session fell back to the client IP")
        return f"alice -> {ids.pop()} from 20 addresses; 30 subjects over {len(spread)} back ends"


@test
def origin_allowlist():
    with Backend("echo", id="b1") as b, \
            Wsgate(gateway_config(pools=[{"name": "main", "backends": [b]}], routes=[
                {"path_prefix": "/", "pool": "main",
                 "allowed_origins": ["https://app.example.com", "https://*.example.com"]}])) as gw:
        allowed = ["https://app.example.com", "HTTPS://APP.EXAMPLE.COM", "https://chat.example.com"]
        for origin in allowed:
            check_eq(ask_backend(gw.port, "echo", extra=[("Origin", origin)]), "echo",
                     f"Origin {origin}")
        refused = [None, "https://evil.test", "http://app.example.com", "https://example.com",
                   "https://app.example.com.evil.test", "https://evil.test/.example.com",
                   "https://user@evil.example.com", "null"]
        for origin in refused:
            extra = [] if origin is None else [("Origin", origin)]
            status, headers, body = upgrade(gw.port, extra)
            check_eq(status, 403, f"Origin {origin}: status")
            check("origin not allowed" in body.decode("utf-8", "replace"),
                  f"Origin {origin}: body {body!r}")
        check_eq(len(b.events("open", wait_for=len(allowed))), len(allowed),
                 "back-end sessions (refused origins must not reach it)")
        entries = gw.access_log_entries(wait_for=len(allowed) + len(refused))
        check_eq(sum(1 for e in entries if e["status"] == 403 and e["reason"] == "origin not allowed"),
                 len(refused), "403 lines in the access log")


if __name__ == "__main__":
    main()
