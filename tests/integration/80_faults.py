"""Fault injection: peers that die, freeze, vanish from the network, half
close, reset in the middle of a handshake or answer nonsense. Every test
also checks that wsgate gives back the file descriptors of the sessions
that failed, and keeps serving a well-behaved client afterwards."""

import atexit
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time

from harness import (HOST, OP_BINARY, OP_CLOSE, OP_TEXT, PYTHON, Backend,
                     FrameSocket, RawBackend, RawWs, Wsgate, _spawn, check,
                     check_between, check_eq, free_port, garbage, main, new_tmpdir,
                     parse_close, raw_request, recorder,
                     test, upgrade_head, upgrade_then_silence, wait_until,
                     wrong_accept)


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def settle_fds(gw, baseline, timeout=8.0):
    """Waits until wsgate holds no more descriptors than <baseline>; returns
    the final count."""
    wait_until(lambda: fd_count(gw.pid) <= baseline, timeout, interval=0.1)
    return fd_count(gw.pid)


def baseline_fds(gw):
    """wsgate's descriptor count once one session has come and gone (so
    whatever libevent opens lazily is already counted)."""
    ws = RawWs.connect(gw.port)
    ws.send_text("warm-up")
    check_eq(ws.recv_message(), (OP_TEXT, b"warm-up"), "warm-up echo")
    ws.send_close(1000)
    ws.wait_eof(5)
    ws.close()
    time.sleep(0.3)
    return fd_count(gw.pid)


def check_serves(gw, what):
    ws = RawWs.connect(gw.port)
    ws.send_text("still serving")
    check_eq(ws.recv_message(), (OP_TEXT, b"still serving"), f"{what}: echo afterwards")
    ws.send_close(1000)
    ws.wait_eof(5)
    ws.close()


def access_entry(gw, predicate, what, timeout=6.0):
    """The first access-log entry for which <predicate> holds."""
    found = []

    def look():
        found[:] = [e for e in gw.access_log_entries(wait_for=0, timeout=0) if predicate(e)]
        return found
    wait_until(look, timeout, interval=0.1)
    check(found, f"{what}: no matching access-log entry in {timeout}s")
    return found[0]


@test(timeout=60)
def backend_sigkilled_mid_conversation_1014():
    # Eight clients talk to one back end in lock step; it is SIGKILLed in
    # the middle: every client gets every echo it was owed, in order, then
    # close 1014 "backend reset".
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        baseline = baseline_fds(gw)
        clients = [RawWs.connect(gw.port) for _ in range(8)]
        results = [None] * len(clients)

        def talk(i, ws):
            seq = 0
            try:
                while True:
                    text = f"c{i}-m{seq}"
                    try:
                        ws.send_text(text)
                    except OSError:
                        pass   # the close frame is already on its way
                    msg = ws.recv_message(timeout=10)
                    if msg is None:
                        results[i] = ("eof", seq)
                        return
                    if msg[0] == OP_CLOSE:
                        results[i] = (parse_close(msg[1]), seq)
                        return
                    if msg != (OP_TEXT, text.encode()):
                        results[i] = (f"message {seq} was {msg!r}", seq)
                        return
                    seq += 1
                    if seq > 100000:
                        results[i] = ("never closed", seq)
                        return
            except Exception as e:
                results[i] = (repr(e), seq)

        threads = [threading.Thread(target=talk, args=(i, ws), daemon=True)
                   for i, ws in enumerate(clients)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        b.kill()
        for t in threads:
            t.join(15)
        for i, (outcome, seq) in enumerate(results):
            check_eq(outcome, (1014, "backend reset"), f"client {i} after {seq} echoes")
            check(seq > 0, f"client {i}: no echo before the kill")
        for ws in clients:
            ws.send_close(1000)
            check(ws.wait_eof(5), "client TCP open 5 s after answering the close")
            ws.close()
        check_eq(settle_fds(gw, baseline), baseline, "wsgate descriptors after the kill")
        entries = gw.access_log_entries(wait_for=9, timeout=5)[1:]
        check_eq([(e.get("close_code"), e.get("reason")) for e in entries],
                 [(1014, "backend reset")] * 8, "access-log close code and reason")
        return f"echoes per client before 1014: {[seq for _, seq in results]}"


@test(timeout=60)
def backend_sigkilled_mid_stream():
    # Four clients receive a fast stream; the back end is SIGKILLed in the
    # middle. Every client gets an unbroken prefix of the stream, then close
    # 1014 if the stream stopped at a frame boundary; if the kernel had sent
    # only part of a frame, no close frame can follow it, and wsgate must
    # end the TCP connection right after the partial frame.
    with Backend("flood", id="f1", count=200000, size=512) as b, \
            Wsgate({"backends": [b]}) as gw:
        baseline = baseline_fds_flood(gw)
        clients = [RawWs.connect(gw.port) for _ in range(4)]
        for ws in clients:
            first = ws.recv_message(timeout=5)
            check(first is not None and first[0] == OP_BINARY, "first flood message")
            ws.next_seq = struct.unpack(">Q", first[1][:8])[0] + 1
        b.kill()
        outcomes = []
        for i, ws in enumerate(clients):
            while True:
                msg = ws.recv_message(timeout=10)
                if msg is None:
                    check(len(ws.buf) > 0, f"client {i}: EOF at a frame boundary without "
                          f"a close frame after {ws.next_seq} messages")
                    outcomes.append("partial frame, EOF")
                    break
                if msg[0] == OP_CLOSE:
                    check_eq(parse_close(msg[1]), (1014, "backend reset"), f"client {i}: close")
                    outcomes.append("1014")
                    ws.send_close(1000)
                    check(ws.wait_eof(5), f"client {i}: TCP open 5 s after answering the close")
                    break
                seq = struct.unpack(">Q", msg[1][:8])[0]
                check_eq(seq, ws.next_seq, f"client {i}: sequence number")
                check(msg[1][8:] == bytes([seq % 251]) * 504, f"client {i}: payload of {seq}")
                ws.next_seq += 1
            ws.close()
        check(any(ws.next_seq < 200000 for ws in clients), "the kill came after the stream ended")
        check_eq(settle_fds(gw, baseline), baseline, "wsgate descriptors after the kill")
        entries = gw.access_log_entries(wait_for=5, timeout=5)[1:]
        check_eq([(e.get("close_code"), e.get("reason")) for e in entries],
                 [(1014, "backend reset")] * 4, "access-log close code and reason")
        return ", ".join(f"{ws.next_seq} messages then {o}" for ws, o in zip(clients, outcomes))


def baseline_fds_flood(gw):
    ws = RawWs.connect(gw.port)
    check(ws.recv_message(timeout=5) is not None, "warm-up flood message")
    ws.abort()
    check(gw.access_log_lines(wait_for=1, timeout=10), "warm-up session never ended")
    time.sleep(0.2)
    return fd_count(gw.pid)


@test(timeout=60)
def backend_sigstopped_heartbeat_cuts():
    # peers = "backend": a frozen back end (kernel still ACKs) never answers
    # wsgate's ping; the client must be told within interval + timeout.
    config = {"heartbeat": {"interval": "500ms", "timeout": "1s", "peers": "backend"}}
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b], **config}) as gw:
        baseline = baseline_fds(gw)
        ws = RawWs.connect(gw.port)
        ws.send_text("before")
        check_eq(ws.recv_message(), (OP_TEXT, b"before"), "echo before the stop")
        time.sleep(1.6)   # the live back end answers pings: still open
        ws.send_text("alive")
        check_eq(ws.recv_message(), (OP_TEXT, b"alive"), "echo while pings are answered")
        b.pause()
        try:
            started = time.monotonic()
            got = ws.recv_close(timeout=6)
            elapsed = time.monotonic() - started
            check(got is not None, "no close frame to the client")
            check(got[0] in (1001, 1014), f"close code to the client: {got}")
            check_between(elapsed, 0.4, 1.5 + 1.0 + 1.0, "seconds from SIGSTOP to the close")
            ws.send_close(1000)
            check(ws.wait_eof(5), "client TCP open 5 s after answering the close")
            ws.close()
            entry = access_entry(gw, lambda e: e.get("reason") == "heartbeat timeout",
                                 "frozen back end")
            check_eq(entry.get("close_by"), "proxy", "close_by")
            check_eq(settle_fds(gw, baseline), baseline, "wsgate descriptors after the cut")
        finally:
            b.resume()
        return f"client got {got} after {elapsed:.2f}s"


# A raw WebSocket client run as its own process (so it can be frozen with
# SIGSTOP or put in another network namespace): handshakes with HOST:PORT,
# checks one echo, prints "open", then answers every ping until stopped.
CLIENT_PY = r'''
import base64, os, socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port), timeout=10)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = s.recv(4096)
    if not chunk:
        sys.exit("closed during the handshake")
    buf += chunk
head, buf = buf.split(b"\r\n\r\n", 1)
if b" 101 " not in head.split(b"\r\n")[0]:
    sys.exit("no 101: %r" % head[:80])
def send(op, payload):
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    s.sendall(bytes([0x80 | op, 0x80 | len(payload)]) + mask + body)
def frames():
    global buf
    s.settimeout(None)
    while True:
        while len(buf) >= 2 and len(buf) >= 2 + (buf[1] & 0x7F):
            n = buf[1] & 0x7F   # frames from wsgate here are short
            op, payload, buf = buf[0] & 0xF, buf[2:2 + n], buf[2 + n:]
            yield op, payload
        chunk = s.recv(65536)
        if not chunk:
            return
        buf += chunk
send(1, b"hello")
it = frames()
for op, payload in it:
    if op == 1 and payload == b"hello":
        break
print("open", flush=True)
for op, payload in it:
    if op == 9:
        send(10, payload)
    elif op == 8:
        break
'''


def start_client(host, port, netns=None):
    """The CLIENT_PY process (inside <netns> when given), once it printed
    "open"."""
    path = os.path.join(new_tmpdir("client"), "client.py")
    with open(path, "w") as f:
        f.write(CLIENT_PY)
    argv = [PYTHON, path, host, str(port)]
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    proc = _spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    line = b""
    deadline = time.monotonic() + 10
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            chunk = os.read(proc.stdout.fileno(), 256)
            if not chunk:
                break
            line += chunk
    check(line.startswith(b"open"), f"client did not open: {line[:300]!r}")
    return proc


def wait_backend_close(b, timeout):
    closes = b.close_events(wait_for=1, timeout=timeout)
    return closes[0] if closes else None


@test(timeout=60)
def client_sigstopped_cut_within_interval_plus_timeout():
    config = {"heartbeat": {"interval": "500ms", "timeout": "1s", "peers": "client"}}
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b], **config}) as gw:
        baseline = baseline_fds(gw)
        b.close_events(wait_for=1, timeout=5)   # the warm-up session's close
        client = start_client(HOST, gw.port)
        time.sleep(2.0)   # pings answered: the session must stay
        check_eq(len(b.close_events(wait_for=2, timeout=0)), 1, "sessions closed before SIGSTOP")
        os.kill(client.pid, signal.SIGSTOP)
        started = time.monotonic()
        check(wait_until(lambda: len(b.close_events(wait_for=0, timeout=0)) >= 2, 6),
              "back end not told within 6 s of the client's SIGSTOP")
        elapsed = time.monotonic() - started
        event = b.close_events(wait_for=2, timeout=0)[1]
        check_eq((event["code"], event["reason"]), (1001, "heartbeat timeout"), "close to the back end")
        check_between(elapsed, 0.4, 0.5 + 1.0 + 1.5, "seconds from SIGSTOP to the cut")
        check_eq(settle_fds(gw, baseline), baseline, "wsgate descriptors after the cut")
        os.kill(client.pid, signal.SIGCONT)
        return f"cut {elapsed:.2f}s after SIGSTOP (interval 0.5s + timeout 1s)"


class VethPair:
    """A network namespace holding one end of a veth pair (10.200.N.2/30);
    the other end (10.200.N.1) stays in this namespace. Always removed."""

    def __init__(self):
        tag = f"{os.getpid() % 100000}"
        self.netns = f"wsgt{tag}"
        self.outer, self.inner = f"wsgt{tag}a", f"wsgt{tag}b"
        octet = os.getpid() % 250 + 1
        self.outer_ip, self.inner_ip = f"10.200.{octet}.1", f"10.200.{octet}.2"
        atexit.register(self.remove)

    def ip(self, *args, netns=None):
        argv = ["ip"] + (["netns", "exec", netns, "ip"] if netns else []) + list(args)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)}: {done.stderr.strip()}")

    def __enter__(self):
        self.remove()
        self.ip("netns", "add", self.netns)
        try:
            self.ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
            self.ip("link", "set", self.inner, "netns", self.netns)
            self.ip("addr", "add", f"{self.outer_ip}/30", "dev", self.outer)
            self.ip("link", "set", self.outer, "up")
            self.ip("addr", "add", f"{self.inner_ip}/30", "dev", self.inner, netns=self.netns)
            self.ip("link", "set", self.inner, "up", netns=self.netns)
            self.ip("link", "set", "lo", "up", netns=self.netns)
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc):
        self.remove()

    def link_down(self):
        self.ip("link", "set", self.outer, "down")

    def remove(self):
        # Deleting the namespace deletes the inner end, and with it the pair.
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True, timeout=10)


def netns_available():
    try:
        return os.geteuid() == 0 and subprocess.run(
            ["ip", "netns", "list"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@test(timeout=60)
def client_vanished_without_fin_netns():
    # The client sits in its own network namespace behind a veth pair; the
    # link goes down, so no FIN or RST ever reaches wsgate. The heartbeat
    # must find the dead peer within interval + timeout.
    if not netns_available():
        return "skipped: needs root and iproute2 for a network namespace"
    with VethPair() as veth:
        port = free_port()
        config = {"port": port, "listeners": [f"{veth.outer_ip}:{port}", f"{HOST}:{port}"],
                  "heartbeat": {"interval": "500ms", "timeout": "1s", "peers": "client"}}
        with Backend("echo", id="b1") as b, Wsgate({"backends": [b], **config}) as gw:
            baseline = baseline_fds(gw)
            b.close_events(wait_for=1, timeout=5)
            client = start_client(veth.outer_ip, port, netns=veth.netns)
            time.sleep(2.0)   # pings answered across the veth: still open
            check_eq(len(b.close_events(wait_for=2, timeout=0)), 1, "sessions closed before the link went down")
            veth.link_down()
            started = time.monotonic()
            check(wait_until(lambda: len(b.close_events(wait_for=0, timeout=0)) >= 2, 6),
                  "back end not told within 6 s of the link going down")
            elapsed = time.monotonic() - started
            event = b.close_events(wait_for=2, timeout=0)[1]
            check_eq((event["code"], event["reason"]), (1001, "heartbeat timeout"),
                     "close to the back end")
            check_between(elapsed, 0.4, 0.5 + 1.0 + 1.5, "seconds from link down to the cut")
            entry = access_entry(gw, lambda e: e.get("client", "").startswith(veth.inner_ip),
                                 "vanished client")
            check_eq(entry.get("reason"), "heartbeat timeout", "access-log reason")
            check_eq(settle_fds(gw, baseline), baseline, "wsgate descriptors after the cut")
            check_serves(gw, "after the vanished client")
            client.kill()
            return f"cut {elapsed:.2f}s after the link went down"


@test(timeout=60)
def client_reset_while_backend_paused():
    # The client stops reading while the back end floods, so wsgate stops
    # reading the back end (backpressure); then the client resets. The back
    # end must get 1001 and the session must end as soon as its close reply
    # comes back, not after the 5 s close linger.
    with Backend("flood", id="f", count=100000, size=16384) as b, Wsgate({"backends": [b]}) as gw:
        ws = RawWs.connect(gw.port)
        time.sleep(1.0)  # socket buffers and wsgate's buffer fill up
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        started = time.monotonic()
        ws.sock.close()
        entry = access_entry(gw, lambda e: e.get("status") == 101, "reset client", timeout=8)
        elapsed = time.monotonic() - started
        check_eq((entry.get("close_code"), entry.get("close_by")), (1001, "client"), "access-log close")
        event = b.close_events(wait_for=1, timeout=5)
        check_eq(event[0]["code"], 1001, "close code at the back end")
        check(elapsed < 3, f"session ended {elapsed:.2f} s after the reset (the linger is 5 s)")
        return f"session ended {elapsed:.2f} s after the reset"


@test
def client_half_close_after_data():
    # The client sends three messages and shuts down its write side without
    # a close frame: the messages still reach the back end, which then gets
    # 1001, and wsgate ends the client's TCP connection.
    with recorder() as rb, Wsgate({"backends": [rb]}) as gw:
        ws = RawWs.connect(gw.port)
        for text in (b"one", b"two", b"three"):
            ws.send_frame(OP_TEXT, text)
        ws.sock.shutdown(socket.SHUT_WR)
        check(wait_until(lambda: any(k == "close" for k, _ in rb.events), 6),
              f"back end got no close frame (events {rb.events})")
        check_eq([f.payload for f in rb.frames_of(OP_TEXT)], [b"one", b"two", b"three"],
                 "messages at the back end")
        check_eq([v[0] for k, v in rb.events if k == "close"], [1001], "close code to the back end")
        check(ws.wait_eof(6), "client TCP still open 6 s after its FIN")


@test
def client_half_close_after_close_frame():
    # A client sends its close frame and shuts down its write side: it may
    # still read, and the back end's close reply must reach it (RFC 6455
    # sections 5.5.1 and 7.1.1) before wsgate ends the connection, well
    # before the 5 s close linger.
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        ws = RawWs.connect(gw.port)
        ws.send_text("x")
        check_eq(ws.recv_message(), (OP_TEXT, b"x"), "echo")
        started = time.monotonic()
        ws.send_close(4000, "done")
        ws.sock.shutdown(socket.SHUT_WR)
        check_eq(ws.recv_close(timeout=4), (4000, "done"), "the back end's close reply at the half-closed client")
        check(ws.wait_eof(4), "TCP still open 4 s after the close handshake")
        elapsed = time.monotonic() - started
        check(elapsed < 3, f"close handshake took {elapsed:.2f} s (the linger is 5 s)")
        event = b.close_events(wait_for=1, timeout=5)
        check_eq((event[0]["code"], event[0]["reason"]), (4000, "done"), "close at the back end")
        entry = access_entry(gw, lambda e: True, "half-closed client")
        check_eq((entry.get("close_code"), entry.get("close_by")), (4000, "client"),
                 "access-log close_code and close_by")


def _half_close_backend(rb, sock):
    head, leftover = rb.read_request(sock)
    rb.send_upgrade(sock, head)
    fs = FrameSocket(sock, leftover, mask=False)
    for text in (b"one", b"two", b"three"):
        fs.send_frame(OP_TEXT, text)
    sock.shutdown(socket.SHUT_WR)
    while True:
        frame = fs.recv_frame(timeout=10)
        if frame is None:
            rb.record("eof")
            return
        if frame.opcode == OP_CLOSE:
            rb.record("close", parse_close(frame.payload))


@test
def backend_half_close_without_close_frame():
    # The back end sends three messages and a FIN, no close frame: the
    # client gets the messages, then 1014.
    with RawBackend(_half_close_backend) as rb, Wsgate({"backends": [rb]}) as gw:
        ws = RawWs.connect(gw.port)
        got = [ws.recv_message(timeout=5) for _ in range(3)]
        check_eq(got, [(OP_TEXT, b"one"), (OP_TEXT, b"two"), (OP_TEXT, b"three")],
                 "messages before the FIN")
        check_eq(ws.recv_close(timeout=5), (1014, "backend reset"), "close to the client")
        ws.send_close(1000)
        check(ws.wait_eof(6), "client TCP open 6 s after answering the close")
        check(wait_until(lambda: ("eof", None) in rb.events, 6), "back end socket not closed")


def _reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _slow_backend(rb, sock):
    """Reads the request, then waits (no answer) until wsgate closes."""
    rb.read_request(sock)
    while not rb.stopping.is_set():
        sock.settimeout(0.2)
        try:
            if not sock.recv(65536):
                rb.record("eof")
                return
        except socket.timeout:
            continue
        except ConnectionResetError:
            rb.record("eof")
            return


@test(timeout=60)
def client_rst_mid_handshake():
    # RST at every stage of the handshake: half a head, a whole head before
    # the back end answers. wsgate must free both sockets and keep serving.
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        baseline = baseline_fds(gw)
        head = upgrade_head(host=f"{HOST}:{gw.port}")
        for cut in (1, 20, len(head) // 2, len(head) - 1):
            for _ in range(10):
                sock = socket.create_connection((HOST, gw.port), timeout=5)
                sock.sendall(head[:cut])
                _reset(sock)
        check_eq(settle_fds(gw, baseline), baseline, "descriptors after 40 half-head resets")
        check_serves(gw, "after the resets")
    # While wsgate awaits the back end's answer it still reads the client:
    # a reset is noticed at once, and the back-end connection is closed with
    # it rather than held until timeouts.handshake (4 s here).
    with RawBackend(_slow_backend) as rb, \
            Wsgate({"backends": [rb], "timeouts": {"handshake": "4s"}}) as gw:
        sock = socket.create_connection((HOST, gw.port), timeout=5)
        sock.sendall(upgrade_head(host=f"{HOST}:{gw.port}"))
        check(wait_until(lambda: len(rb.heads) == 1, 5), "request not forwarded")
        _reset(sock)
        started = time.monotonic()
        check(wait_until(lambda: ("eof", None) in rb.events, 6),
              "back end connection still open 6 s after the client's RST")
        held = time.monotonic() - started
        check_between(held, 0.0, 1.0, "seconds the back-end connection outlived the client")
        entry = access_entry(gw, lambda e: True, "client reset while awaiting the answer")
        check(entry.get("status") != 101, f"status of the reset handshake: {entry}")
        check_eq(entry.get("close_by"), "client", "close_by of the reset handshake")
        return f"back-end connection closed {held:.2f}s after the client's RST (handshake timeout 4s)"


def _reset_after_request(rb, sock):
    rb.read_request(sock)
    _reset(sock)


@test
def backend_rst_mid_handshake_502():
    with RawBackend(_reset_after_request) as rb, Wsgate({"backends": [rb]}) as gw:
        for i in range(5):
            status, headers, _ = raw_request(gw.port, upgrade_head(host=f"{HOST}:{gw.port}"))
            check_eq(status, 502, f"attempt {i}: status after the back end's RST")
            check_eq(headers.get("connection", "").lower(), "close", "Connection header")


@test(timeout=60)
def bad_backends_refused_without_leaks():
    # Garbage, a wrong accept key, and 101 then silence, 20 times each:
    # clean refusals (502) or, for the silent one, an idle cut; descriptors
    # all given back.
    for name, factory in (("garbage", garbage), ("wrong accept", wrong_accept)):
        with factory() as rb, Wsgate({"backends": [rb]}) as gw:
            before = fd_count(gw.pid)
            for i in range(20):
                status, headers, _ = raw_request(gw.port, upgrade_head(host=f"{HOST}:{gw.port}"))
                check_eq(status, 502, f"{name} #{i}: status")
            check_eq(settle_fds(gw, before), before, f"{name}: descriptors after 20 refusals")
            entries = gw.access_log_entries(wait_for=20, timeout=5)
            check_eq(sorted({e.get("status") for e in entries}), [502], f"{name}: logged statuses")
    config = {"timeouts": {"idle": "1s"}}
    with upgrade_then_silence() as rb, Wsgate({"backends": [rb], **config}) as gw:
        before = fd_count(gw.pid)
        clients = [RawWs.connect(gw.port) for _ in range(20)]
        for ws in clients:
            ws.send_text("anyone?")
        for i, ws in enumerate(clients):
            got = ws.recv_close(timeout=5)
            check_eq(got, (1001, "idle timeout"), f"silent back end #{i}: close")
            ws.send_close(1001)
            ws.wait_eof(3)
            ws.close()
        check_eq(settle_fds(gw, before), before, "101-then-silence: descriptors after 20 cuts")


if __name__ == "__main__":
    main()
