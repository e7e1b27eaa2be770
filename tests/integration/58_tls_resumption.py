"""TLS session resumption (proxy/net/tls_session.cpp, tls.cpp): a client that
offers the session of an earlier connection resumes it (Python's
SSLSocket.session_reused, i.e. SSL_session_reused) across the two workers of
one process, across a SIGHUP reload, and across two wsgate processes that
share a ticket_key_file; a TLS 1.2 client without ticket support
(ssl.OP_NO_TICKET) resumes by session ID. Controls show that the check can
fail: separate processes without a shared key, a different key file, and a
listener with session_cache = 0 do not resume by ID."""

import os
import re
import socket
import ssl
import subprocess

from harness import (HOST, Backend, Wsgate, check, check_eq, main, new_tmpdir, read_head, test, upgrade_head,
                     wsgate_binary)
from tlsutil import Ca, client_context, gateway_config

SERVER_NAME = "gw.test"


def pki():
    d = new_tmpdir("pki")
    ca = Ca(d)
    cert, key = ca.issue(SERVER_NAME, dns=[SERVER_NAME])
    return d, ca, cert, key


def listener(cert, key, **extra):
    return {"listen": f"{HOST}:@PORT@", "tls": {"cert": cert, "key": key, **extra}}


def config(cert, key, backend, workers=1, **extra):
    text = gateway_config([listener(cert, key, **extra)], [{"name": "main", "backends": [backend]}])
    return text.replace("workers = 1", f"workers = {workers}")


def client(ca, tickets=True):
    """A client context; without <tickets> it speaks TLS 1.2 only and never
    sends the session ticket extension, so only a session ID can resume."""
    ctx = client_context(ca.cert)
    if not tickets:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.options |= ssl.OP_NO_TICKET
    return ctx


def upgrade(port, ctx, session=None):
    """One TLS connection and WebSocket upgrade to <port>, offering <session>:
    (session to offer next time, whether this one was resumed). Reading the
    101 also reads TLS 1.3's NewSessionTicket messages, which precede it."""
    raw = socket.create_connection((HOST, port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname=SERVER_NAME, session=session) as tls:
        tls.sendall(upgrade_head("/", f"{HOST}:{port}"))
        head, _ = read_head(tls, 5)
        check(head.startswith(b"HTTP/1.1 101"), f"upgrade answered {head[:40]!r}")
        return tls.session, tls.session_reused


def resumes(port, ctx, session, times=1):
    """How many of <times> connections offering <session> were resumed."""
    return sum(1 for _ in range(times) if upgrade(port, ctx, session)[1])


def reload_to(gw, text, generation):
    since = gw.error_log_offset()
    gw.rewrite_config(text.replace("@PORT@", str(gw.port)).replace("@TMP@", gw.tmpdir))
    gw.reload()
    found = gw.wait_error_log(rf"reloaded .*: generation {generation}\b", 10, since)
    check(found is not None, f"no generation {generation} after SIGHUP: {gw.diagnostics()}")


@test(timeout=60)
def resumption_across_workers():
    """workers = 2 with SO_REUSEPORT: 16 connections offering one session
    land on both workers (all on one has chance 2^-15), and every one
    resumes, by ticket (TLS 1.3) and by session ID (TLS 1.2 without tickets)."""
    _, ca, cert, key = pki()
    with Backend("echo", id="b1") as b, Wsgate(config(cert, key, b, workers=2)) as gw:
        for tickets in (True, False):
            ctx = client(ca, tickets)
            session, reused = upgrade(gw.port, ctx)
            check(not reused, "the first handshake cannot be a resumption")
            check_eq(resumes(gw.port, ctx, session, 16), 16, f"resumed of 16 (tickets={tickets})")


@test(timeout=60)
def resumption_across_reload():
    """A session from generation 1 resumes on generation 2 (the ticket keys
    and the session-ID cache belong to the process, not to a generation),
    by ticket and by ID."""
    _, ca, cert, key = pki()
    with Backend("echo", id="b1") as b, Wsgate(config(cert, key, b)) as gw:
        contexts = {t: client(ca, t) for t in (True, False)}
        sessions = {t: upgrade(gw.port, ctx)[0] for t, ctx in contexts.items()}
        reload_to(gw, config(cert, key, b, session_timeout="10m"), 2)
        for tickets, session in sessions.items():
            check_eq(resumes(gw.port, contexts[tickets], session, 3), 3, f"resumed after reload (tickets={tickets})")


@test(timeout=60)
def ticket_key_file_shared_by_two_processes():
    """Two wsgate processes with one ticket_key_file: a ticket issued by the
    first resumes on the second (a fleet behind one L4 balancer). Processes
    without it, or with different key files, do not resume each other's
    tickets. After the file changes and a reload, the old key still decrypts."""
    d, ca, cert, key = pki()
    key_a, key_b = os.path.join(d, "a.key80"), os.path.join(d, "b.key80")
    for path in (key_a, key_b):
        with open(path, "wb") as f:
            f.write(os.urandom(80))
    ctx = client(ca)
    with Backend("echo", id="b1") as b, \
            Wsgate(config(cert, key, b, ticket_key_file=key_a)) as one, \
            Wsgate(config(cert, key, b, ticket_key_file=key_a)) as two, \
            Wsgate(config(cert, key, b, ticket_key_file=key_b)) as other, \
            Wsgate(config(cert, key, b)) as generated:
        session, _ = upgrade(one.port, ctx)
        check_eq(resumes(two.port, ctx, session, 3), 3, "resumed on the second process sharing the key file")
        check_eq(resumes(other.port, ctx, session), 0, "resumed with a different key file")
        check_eq(resumes(generated.port, ctx, session), 0, "resumed with generated keys")
        # The operator rotates: a new file, a reload. Tickets of the old key
        # still resume (and are renewed); new tickets use the new key.
        rotated = os.path.join(d, "rotated.key80")
        with open(rotated, "wb") as f:
            f.write(os.urandom(80))
        reload_to(two, config(cert, key, b, ticket_key_file=rotated), 2)
        check_eq(resumes(two.port, ctx, session), 1, "old ticket resumed after the key file changed")
        fresh, _ = upgrade(two.port, ctx)
        check_eq(resumes(one.port, ctx, fresh), 0, "a ticket of the new key resumed where only the old one is known")


@test(timeout=60)
def session_cache_zero_turns_off_id_resumption():
    """session_cache = 0: a client without tickets gets full handshakes;
    ticket clients still resume."""
    _, ca, cert, key = pki()
    with Backend("echo", id="b1") as b, Wsgate(config(cert, key, b, session_cache=0)) as gw:
        for tickets, expected in ((False, 0), (True, 2)):
            ctx = client(ca, tickets)
            session, _ = upgrade(gw.port, ctx)
            check_eq(resumes(gw.port, ctx, session, 2), expected, f"resumed with session_cache = 0 (tickets={tickets})")


@test(timeout=30)
def bad_ticket_key_file_is_a_config_error():
    """A missing or short key file fails the start with FILE:LINE:COL."""
    d, _, cert, key = pki()
    short = os.path.join(d, "short.key")
    with open(short, "wb") as f:
        f.write(os.urandom(48))
    with Backend("echo", id="b1") as b:
        for path, reason in ((short, "must be exactly 80 bytes (made with `openssl rand 80`), got 48"),
                             (os.path.join(d, "missing.key"), "cannot open ticket key file")):
            toml = os.path.join(d, "check.toml")
            with open(toml, "w") as f:
                f.write(config(cert, key, b, ticket_key_file=path).replace("@PORT@", "1").replace("@TMP@", d))
            proc = subprocess.run([wsgate_binary(), "--test", "-c", toml], capture_output=True, text=True, timeout=10)
            check(proc.returncode != 0, f"--test accepted {path}")
            check(re.search(re.escape(toml) + r":\d+:\d+: listener\[0\]\.tls\.ticket_key_file: .*" + re.escape(reason),
                            proc.stderr), f"error text: {proc.stderr.strip()[:300]}")


if __name__ == "__main__":
    main()
