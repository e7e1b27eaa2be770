"""Empty connections (a port probe, a load balancer's TCP check): a client
that connects and sends nothing writes no access-log line by default
([log] empty_connections = false, like HAProxy's dontlognull) and is counted
in wsgate_empty_connections_total instead; one byte is enough to be logged;
empty_connections = true logs them again."""

import socket
import time
from contextlib import ExitStack

from harness import (HOST, Backend, Wsgate, check, check_eq, free_port, main,
                     new_tmpdir, scrape, test, wait_until, whoami)
from tlsutil import Ca, gateway_config


def probes(port):
    """Two empty connections (closed at once; silent until the 1 s
    handshake timeout answers 408) and one that sent "GE" then closed."""
    sock = socket.create_connection((HOST, port), timeout=5)
    sock.close()
    sock = socket.create_connection((HOST, port), timeout=5)
    try:
        answer = sock.recv(4096)
        check(answer.startswith(b"HTTP/1.1 408") or answer == b"", f"silent client got {answer[:40]!r}")
    finally:
        sock.close()
    sock = socket.create_connection((HOST, port), timeout=5)
    sock.sendall(b"GE")
    time.sleep(0.1)
    sock.close()


def run(empty_connections):
    with ExitStack() as stack:
        b1 = stack.enter_context(Backend("echo", id="b1"))
        admin_port = free_port()
        log = {} if empty_connections is None else {"empty_connections": empty_connections}
        gw = stack.enter_context(Wsgate({"admin": f"{HOST}:{admin_port}", "backends": [b1], "log": log,
                                         "timeouts": {"handshake": "1s"}}))
        probes(gw.port)
        check_eq(whoami(gw.port), "b1", "a real session after the probes")
        check(wait_until(lambda: scrape(admin_port).get("wsgate_empty_connections_total") == 2, 5),
              f"wsgate_empty_connections_total = {scrape(admin_port).get('wsgate_empty_connections_total')}")
        expected = 2 + (2 if empty_connections else 0)   # "GE" + the session (+ the two probes)
        entries = gw.access_log_entries(wait_for=expected, timeout=5)
        time.sleep(0.3)   # a line that should not be there would have come by now
        entries = gw.access_log_entries(wait_for=expected, timeout=1)
        return entries


@test(timeout=30)
def empty_connections_left_out_by_default():
    """Default: the two probes leave no line and count 2; the "GE" client
    and the real session are logged."""
    entries = run(None)
    check_eq(len(entries), 2, f"access-log lines: {entries}")
    check_eq(entries[0].get("bytes_in"), 0, "the GE client's line (bytes not parsed)")
    check_eq(entries[1].get("status"), 101, "the session's line")
    return "2 empty connections counted, not logged"


@test(timeout=30)
def empty_connections_logged_when_asked():
    """[log] empty_connections = true: all four connections are logged (the
    probes too) and the two probes are still counted."""
    entries = run(True)
    check_eq(len(entries), 4, f"access-log lines: {entries}")
    check_eq(sum(1 for e in entries if e.get("status") == 101), 1, "sessions logged")
    return "4 lines, 2 of them empty connections"


@test(timeout=40)
def tls_listener_probes_and_garbage():
    """On a TLS listener: a connect-and-close and a silent client (closed at
    the 1 s handshake timeout) are empty, not logged, counted; a client that
    sends bytes that are not TLS is not empty: its failed handshake is
    logged."""
    ca = Ca(new_tmpdir("pki"))
    cert, key = ca.issue("gw.test", dns=["gw.test"], ips=[HOST])
    with ExitStack() as stack:
        b1 = stack.enter_context(Backend("echo", id="b1"))
        admin_port = free_port()
        text = gateway_config([{"listen": f"{HOST}:@PORT@", "tls": {"cert": cert, "key": key}}],
                              [{"name": "main", "backends": [b1]}], timeouts={"handshake": "1s"})
        gw = stack.enter_context(Wsgate(text + f'\n[admin]\nlisten = "{HOST}:{admin_port}"\n'))
        socket.create_connection((HOST, gw.port), timeout=5).close()
        silent = socket.create_connection((HOST, gw.port), timeout=5)
        try:
            check_eq(silent.recv(1), b"", "a silent TLS client is closed at the handshake timeout")
        finally:
            silent.close()
        garbage = socket.create_connection((HOST, gw.port), timeout=5)
        try:
            garbage.sendall(b"hello, not TLS\r\n\r\n")
            try:
                garbage.recv(4096)
            except OSError:
                pass
        finally:
            garbage.close()
        check(wait_until(lambda: scrape(admin_port).get("wsgate_empty_connections_total") == 2, 5),
              f"wsgate_empty_connections_total = {scrape(admin_port).get('wsgate_empty_connections_total')}")
        entries = gw.access_log_entries(wait_for=1, timeout=5)
        time.sleep(0.3)
        entries = gw.access_log_entries(wait_for=1, timeout=1)
        check_eq(len(entries), 1, f"access-log lines (only the garbage client): {entries}")
        return f"2 empty TLS connections counted; the garbage one logged ({entries[0].get('reason')!r})"


if __name__ == "__main__":
    main()
