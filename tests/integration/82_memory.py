"""Memory under backpressure: many sessions whose clients stop reading while
their back ends keep sending. wsgate's resident memory must stay within
3 x limits.buffer_bytes per session (what a stalled direction's input and
output buffers can hold by construction, see below) plus a fixed
per-session overhead, however much the back ends try to send.

The number of sessions is WSGATE_MEMORY_SESSIONS (default 9,900: the most
the per-process cap of 20,000 descriptors allows wsgate, at two per session
plus its reserve; 10,000 would need more. Each stalled session also pins
about 300 KiB of kernel socket memory),
limits.buffer_bytes is WSGATE_MEMORY_BUFFER (default 65536).
Clients live in this process, back ends in a `pressure.py` process, so each
process stays under the cap. Under sanitizers (ASan keeps freed memory in
quarantine) the run is smaller and the RSS bound is reported, not checked.
"""

import json
import os
import re
import select
import socket
import subprocess
import time

from harness import (HOST, PYTHON, HERE, Wsgate, _spawn, check, check_eq, main,
                     new_tmpdir, sanitizer_build, test, upgrade_head, wait_until)

BUFFER_BYTES = int(os.environ.get("WSGATE_MEMORY_BUFFER", "65536"))
# Fixed cost of one session beyond its buffer: the Session, two bufferevents,
# evbuffer chunk slack, libevent and kernel-facing bookkeeping.
OVERHEAD_BYTES = 32 * 1024


def start_push_backend(tmpdir):
    status = os.path.join(tmpdir, "push.json")
    proc = _spawn([PYTHON, os.path.join(HERE, "pressure.py"), "--frame", "16384",
                   "--cap", str(4 << 20), "--sndbuf", "8192", "--status", status],
                  stdout=subprocess.PIPE)
    line = b""
    deadline = time.monotonic() + 10
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            chunk = os.read(proc.stdout.fileno(), 100)
            if not chunk:
                break
            line += chunk
    m = re.match(rb"listening (\d+)", line)
    check(m is not None, f"push back end did not start: {line!r}")
    return proc, int(m.group(1)), status


def read_status(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def open_stalled_client(port):
    """Upgrades, then never reads again (a tiny receive buffer, so the
    kernel holds little on its behalf)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # A small MSS keeps wsgate's send buffer towards this client small (the
    # kernel sizes it from cwnd x MSS, and loopback's MSS is 64 KiB): the
    # test is about wsgate's memory, not the kernel's.
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1024)
    s.settimeout(10)
    s.connect((HOST, port))
    s.sendall(upgrade_head(host=f"{HOST}:{port}"))
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise AssertionError("closed during the handshake")
        data += chunk
    if b" 101 " not in data.split(b"\r\n", 1)[0]:
        raise AssertionError(f"no 101: {data[:80]!r}")
    return s


def stable_rss(gw, settle=1.0, tries=30):
    """RSS (KiB) once two readings <settle> s apart differ by under 1%."""
    last = gw.rss_kib()
    for _ in range(tries):
        time.sleep(settle)
        now = gw.rss_kib()
        if abs(now - last) <= last * 0.01:
            return now
        last = now
    return last


@test(timeout=280)
def stalled_clients_rss_bounded():
    sanitized = sanitizer_build()
    sessions = 500 if sanitized else int(os.environ.get("WSGATE_MEMORY_SESSIONS", "9900"))
    tmpdir = new_tmpdir("memory")
    proc, port, status_path = start_push_backend(tmpdir)
    config = {"backends": [f"{HOST}:{port}"],
              "limits": {"buffer_bytes": BUFFER_BYTES},
              "timeouts": {"handshake": "30s", "idle": "10m"}}
    with Wsgate(config) as gw:
        warm = open_stalled_client(gw.port)
        warm.close()
        check(wait_until(lambda: read_status(status_path).get("open") == 0, 10),
              "warm-up session not closed")
        rss_start = stable_rss(gw, settle=0.5)
        clients = []
        started = time.monotonic()
        for i in range(sessions):
            clients.append(open_stalled_client(gw.port))
        opened_in = time.monotonic() - started
        check(wait_until(lambda: read_status(status_path).get("stalled", 0) >= sessions, 120, 0.5),
              f"back ends not all stalled: {read_status(status_path)}")
        rss_full = stable_rss(gw)
        status = read_status(status_path)
        check_eq(status.get("capped"), 0, "back ends that sent 4 MiB without stalling")
        check_eq(status.get("open"), sessions, "back-end connections open")
        per_session = (rss_full - rss_start) * 1024 / sessions
        # What a stalled direction can hold by construction: the back end's
        # input stops being read at buffer_bytes, and a run of frames (up to
        # the whole input) moves to the client's output while that output is
        # under buffer_bytes, so output < 2 x buffer_bytes: 3 x in all. An
        # unbounded relay would instead hold what the back ends sent (their
        # 4 MiB cap) and fail the `capped` check above.
        bound = 3 * BUFFER_BYTES + OVERHEAD_BYTES
        summary = (f"{sessions} stalled sessions: RSS {rss_start // 1024} MiB -> {rss_full // 1024} MiB, "
                   f"{per_session / 1024:.1f} KiB per session (bound {bound // 1024} KiB: 3 x buffer_bytes "
                   f"{BUFFER_BYTES // 1024} KiB + {OVERHEAD_BYTES // 1024} KiB); back ends sent "
                   f"{status.get('sent', 0) / sessions / 1024:.0f} KiB each; opened in {opened_in:.1f}s")
        if not sanitized:
            check(per_session <= bound, f"over the bound: {summary}")
        for s in clients:
            s.close()
        check(wait_until(lambda: read_status(status_path).get("open") == 0, 60, 0.5),
              f"back-end connections left after the clients closed: {read_status(status_path)}")
        # Once connections fall to half their peak, wsgate hands freed heap
        # back (malloc_trim, checked every 5 s): 90 % of the growth must go.
        target = rss_start + (rss_full - rss_start) // 10
        returned = wait_until(lambda: gw.rss_kib() <= target, 20, 0.5)
        rss_end = stable_rss(gw)
        summary += f"; {rss_end // 1024} MiB after all closed"
        if not sanitized:
            check(returned, f"RSS not back within 10 % of the growth ({target // 1024} MiB): {summary}")
        return summary + (" (ASan: bound not checked)" if sanitized else "")


if __name__ == "__main__":
    main()
