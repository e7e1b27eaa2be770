"""Integration-test harness for wsgate.

Everything a test file needs to drive the real binary over loopback:
processes (`Wsgate`, `Backend`), in-process misbehaving back ends
(`RawBackend` and the factories `reject`, `wrong_accept`, `garbage`,
`silent_accept`, `upgrade_then_silence`, `upgrade_then_reset`, `recorder`),
raw HTTP and RFC 6455 clients that can send what a well-behaved library
never would, and the test registry (`@test`, `main()`) that prints one
`PASS <name>` / `FAIL <name>: <why>` line per test as the runner expects.

Every process a test starts is put in its own process group and killed by
PID when the test ends, when the file exits, or on SIGTERM from the runner.
"""

import asyncio
import atexit
import base64
import hashlib
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HOST = "127.0.0.1"
PYTHON = "/usr/bin/python3"
HERE = os.path.dirname(os.path.abspath(__file__))
BACKEND_PY = os.path.join(HERE, "backend.py")
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA


class HarnessError(Exception):
    """The harness could not set up what a test asked for."""


class TestTimeout(Exception):
    """A test ran past its time limit."""


# --------------------------------------------------------------------------
# Process bookkeeping: every child is killed by PID, never by name.

_children = []        # Popen objects started by the harness, newest last
_raw_backends = []    # RawBackend objects still running
_gateways = []        # Wsgate objects of the current test (for diagnostics)
_root_tmp = tempfile.mkdtemp(prefix="wsgate-it-")
_keep_tmp = False


def _kill_group(proc, sig=signal.SIGKILL):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _spawn(argv, preexec=_raise_nofile, **kwargs):
    proc = subprocess.Popen(argv, start_new_session=True,
                            preexec_fn=preexec, **kwargs)
    _children.append(proc)
    return proc


def _cleanup_children():
    for proc in _children:
        _kill_group(proc)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    _children.clear()
    for rb in list(_raw_backends):
        rb.stop()


def _cleanup_all():
    _cleanup_children()
    if not _keep_tmp:
        shutil.rmtree(_root_tmp, ignore_errors=True)


atexit.register(_cleanup_all)


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _on_sigterm)
_raise_nofile()


def new_tmpdir(prefix="t"):
    """A fresh directory under this file's temporary root."""
    return tempfile.mkdtemp(prefix=prefix + "-", dir=_root_tmp)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_is_listening(port):
    """True when a socket on this host is in LISTEN state on <port>.

    Reads /proc/net/tcp instead of connecting, so the check leaves no
    connection (and no access-log line) behind.
    """
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
                    return True
    except OSError:
        pass
    return False


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise HarnessError(f"no VmRSS for pid {pid}")


def wait_until(predicate, timeout, interval=0.05):
    """Polls <predicate> until it is truthy or <timeout> seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def _tail(path, lines=15):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------
# Configuration.

def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic strings
    raise HarnessError(f"cannot render {v!r} as TOML")


def _table(lines, header, values):
    lines.append(header)
    for key, value in values.items():
        lines.append(f"{key} = {_toml_value(value)}")
    lines.append("")


def _address(b):
    return b if isinstance(b, str) else b.address


def _backend_table(b):
    """[[pool.backend]] keys of <b>: an address, a Backend/RawBackend object,
    or a dict {address (or backend), id, weight}."""
    if isinstance(b, dict):
        values = dict(b)
        if "backend" in values:
            values["address"] = _address(values.pop("backend"))
        return values
    return {"address": _address(b)}


def render_config(port, tmpdir, backends=None, pools=None, routes=None,
                  listeners=None, server=None, log=None, timeouts=None,
                  heartbeat=None, limits=None, admin=None):
    """TOML text for one wsgate configuration with fast test defaults.

    <backends> (addresses or Backend/RawBackend objects) is a shortcut for a
    single pool "main" hashed on the client IP; <pools> is a list of dicts
    {name, hash, algorithm, balance_factor, health, backends}, where
    <health> is a dict of [pool.health] keys and a back end may also be a
    dict {address or backend, id, weight}. <routes> defaults to "/" -> the
    first pool. <admin> is the [admin] listen address ("127.0.0.1:PORT"),
    None for no admin endpoint. The other arguments override keys of their
    TOML table.
    """
    if pools is None:
        pools = [{"name": "main", "backends": backends or []}]
    if routes is None:
        routes = [{"path_prefix": "/", "pool": pools[0]["name"]}]
    lines = ["# generated by tests/integration/harness.py", ""]
    _table(lines, "[server]", {"workers": 1, "max_connections": 100000,
                               "drain_timeout": "1s", **(server or {})})
    _table(lines, "[log]", {"access": os.path.join(tmpdir, "access.log"),
                            "format": "json",
                            "error": os.path.join(tmpdir, "error.log"),
                            "level": "info", **(log or {})})
    if admin is not None:
        _table(lines, "[admin]", {"listen": admin})
    for listen in listeners or [f"{HOST}:{port}"]:
        _table(lines, "[[listener]]", {"listen": listen})
    _table(lines, "[timeouts]", {"handshake": "5s", "connect": "2s",
                                 "idle": "5m", **(timeouts or {})})
    _table(lines, "[heartbeat]", {"interval": "0s", "timeout": "10s",
                                  "peers": "client", **(heartbeat or {})})
    _table(lines, "[limits]", {"max_header_bytes": 16384,
                               "max_message_bytes": 0,
                               "max_connections_per_ip": 0,
                               "buffer_bytes": 262144, **(limits or {})})
    for route in routes:
        _table(lines, "[[route]]", {"path_prefix": "/", "host": "", **route})
    for pool in pools:
        pool_values = {"name": pool["name"], "hash": pool.get("hash", "ip"),
                       "algorithm": pool.get("algorithm", "ring")}
        if "balance_factor" in pool:
            pool_values["balance_factor"] = pool["balance_factor"]
        _table(lines, "[[pool]]", pool_values)
        if pool.get("health") is not None:
            _table(lines, "[pool.health]", pool["health"])
        for b in pool["backends"]:
            _table(lines, "[[pool.backend]]", _backend_table(b))
    return "\n".join(lines)


def wsgate_binary():
    return os.path.abspath(os.path.join(os.environ.get("WSGATE_BUILD", "build"),
                                        "wsgate"))


# Lines a sanitizer runtime prints when it finds something (ASan, LSan, UBSan).
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer",
                     "ERROR: ThreadSanitizer")
_sanitized = None


def sanitizer_build():
    """True when the wsgate binary under test carries the ASan or UBSan
    runtime (`make asan`): gateways are then stopped with SIGTERM at the end
    of a `with` block, so LeakSanitizer runs, and their exit status and
    output are checked."""
    global _sanitized
    if _sanitized is None:
        try:
            with open(wsgate_binary(), "rb") as f:
                data = f.read()
            _sanitized = b"__asan_init" in data or b"__ubsan_handle" in data
        except OSError:
            _sanitized = False
    return _sanitized


def with_io_override(text):
    """<text> with `[server] io` set to $WSGATE_IO when that is set: the
    tunnel suites run once more with io = "io_uring" (scripts/run-tests).
    A config that names its own io is left alone."""
    io = os.environ.get("WSGATE_IO")
    if not io or re.search(r'^\s*io\s*=', text, re.M):
        return text
    line = f'io = "{io}"\n'
    if re.search(r'^\[server\]\s*$', text, re.M):
        return re.sub(r'^\[server\]\s*$\n', lambda m: m.group(0) + line, text, count=1, flags=re.M)
    return "[server]\n" + line + text


class Wsgate:
    """The wsgate binary under test, as a context manager.

    <config> is a dict of render_config() arguments (`port` optional) or
    TOML text, in which "@PORT@" and "@TMP@" are replaced by a free port
    and the temporary directory. Starting waits (up to <ready_timeout> s)
    for the `ready` line in the error log or the port in LISTEN state.
    """

    def __init__(self, config, tmpdir=None, ready_timeout=10.0, nofile=None, preexec=None):
        self.tmpdir = tmpdir or new_tmpdir("wsgate")
        self.ready_timeout = ready_timeout
        self.nofile = nofile   # RLIMIT_NOFILE (soft = hard) for wsgate, if given
        self.preexec = preexec  # run in the child before exec, after the limit is set
        if isinstance(config, dict):
            config = dict(config)
            self.port = config.pop("port", None) or free_port()
            self.config_text = render_config(self.port, self.tmpdir, **config)
        else:
            port = free_port()
            config = config.replace("@PORT@", str(port)).replace("@TMP@", self.tmpdir)
            m = re.search(r'listen\s*=\s*"[^"]*:(\d+)"', config)
            if not m:
                raise HarnessError("config text has no listen address")
            self.port = int(m.group(1))
            self.config_text = config
        self.config_text = with_io_override(self.config_text)
        self.config_path = os.path.join(self.tmpdir, "wsgate.toml")
        self.access_path = self._log_path("access", "access.log")
        self.error_path = self._log_path("error", "error.log")
        self.out_path = os.path.join(self.tmpdir, "wsgate.out")
        self.proc = None

    def _log_path(self, key, default):
        m = re.search(r'^\s*' + key + r'\s*=\s*"([^"]*)"', self.config_text, re.M)
        path = m.group(1) if m else os.path.join(self.tmpdir, default)
        return None if path == "-" else path

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        if not sanitizer_build():
            self.kill()
            return
        # Under sanitizers a graceful stop lets LeakSanitizer check the heap
        # at exit; a report, or any exit status but 0, fails the test (unless
        # it already failed, or stopped the gateway itself).
        running = self.proc is not None and self.proc.poll() is None
        code = 0
        if running:
            try:
                code = self.stop(timeout=20.0)
            except HarnessError as e:
                if exc_type is None:
                    raise AssertionError(f"under sanitizers: {e}")
                return
        if exc_type is not None:
            return
        report = self.sanitizer_report()
        if report:
            raise AssertionError(f"sanitizer report from wsgate: {report}")
        if code != 0:
            raise AssertionError(f"wsgate exited with status {code} after SIGTERM: "
                                 f"{self.diagnostics()}")

    def sanitizer_report(self, lines=12):
        """The first lines of a sanitizer report in wsgate's output, or ""."""
        text = ""
        for path in (self.out_path, self.error_path):
            try:
                with open(path, "rb") as f:
                    text += f.read().decode("utf-8", "replace")
            except (OSError, TypeError):
                pass
        out = text.splitlines()
        for i, line in enumerate(out):
            if any(m in line for m in SANITIZER_MARKERS):
                return " | ".join(l.strip() for l in out[i:i + lines])
        return ""

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        binary = wsgate_binary()
        if not os.access(binary, os.X_OK):
            raise HarnessError(f"wsgate binary not found: {binary}")
        with open(self.config_path, "w") as f:
            f.write(self.config_text)
        def preexec(limit=self.nofile, extra=self.preexec):
            if limit is None:
                _raise_nofile()
            else:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            if extra is not None:
                extra()
        with open(self.out_path, "ab") as out:
            self.proc = _spawn([binary, "-c", self.config_path], preexec=preexec,
                               stdout=out, stderr=subprocess.STDOUT)
        _gateways.append(self)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"wsgate exited with {self.proc.returncode} "
                                   f"before ready: {self.diagnostics()}")
            if "ready" in self.error_log() or port_is_listening(self.port):
                return self
            time.sleep(0.05)
        raise HarnessError(f"wsgate not ready on port {self.port} after "
                           f"{self.ready_timeout}s: {self.diagnostics()}")

    def error_log(self):
        """The error log so far (stdout/stderr capture when it is "-")."""
        path = self.error_path or self.out_path
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def diagnostics(self):
        parts = []
        for label, path in (("error log", self.error_path), ("output", self.out_path)):
            if path and _tail(path):
                parts.append(f"{label}: {_tail(path)}")
        return " | ".join(parts).replace("\n", " | ") or "(no output)"

    def access_log_lines(self, wait_for=1, timeout=5.0):
        """Complete lines of the access log, polling until there are at least
        <wait_for> of them or <timeout> seconds pass."""
        def lines():
            try:
                with open(self.access_path, "rb") as f:
                    data = f.read().decode("utf-8", "replace")
            except OSError:
                return []
            return [l for l in data.split("\n")[:-1] if l.strip()]
        wait_until(lambda: len(lines()) >= wait_for, timeout)
        return lines()

    def access_log_entries(self, wait_for=1, timeout=5.0):
        """Access-log JSON objects (see access_log_lines for the waiting)."""
        entries = []
        for line in self.access_log_lines(wait_for, timeout):
            try:
                entries.append(json.loads(line))
            except ValueError as e:
                raise AssertionError(f"access log line is not JSON ({e}): {line!r}")
        return entries

    def rss_kib(self):
        return proc_rss_kib(self.proc.pid)

    def reload(self):
        os.kill(self.proc.pid, signal.SIGHUP)

    def rewrite_config(self, config):
        """Replaces the configuration file (no signal sent): <config> is a
        dict of render_config() arguments (the port defaults to the one in
        use) or TOML text, written as is."""
        if isinstance(config, dict):
            config = dict(config)
            port = config.pop("port", None) or self.port
            config = render_config(port, self.tmpdir, **config)
        self.config_text = config = with_io_override(config)
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(config)
        os.replace(tmp, self.config_path)

    def error_log_offset(self):
        """The error log's current length, for wait_error_log(since=...)."""
        return len(self.error_log())

    def wait_error_log(self, pattern, timeout=5.0, since=0):
        """The first match of regex <pattern> in the error log after
        character <since>, polling up to <timeout> s; None if none came."""
        found = wait_until(lambda: re.search(pattern, self.error_log()[since:]), timeout)
        return found or None

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def stop(self, timeout=5.0):
        """SIGTERM, wait; returns the exit code (raises if it hangs)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise HarnessError(f"wsgate did not exit within {timeout}s of SIGTERM")

    def kill(self):
        if self.proc is not None:
            _kill_group(self.proc)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


# --------------------------------------------------------------------------
# Test back ends.

class Backend:
    """tests/integration/backend.py as a child process (see its docstring).

    `address` is "127.0.0.1:PORT"; `events()` reads its event file.
    """

    def __init__(self, mode="echo", id="backend", port=0, count=None,
                 size=None, subprotocols=None, health_path=None, tls_cert=None, tls_key=None):
        self.mode, self.id, self.port = mode, id, port
        self.count, self.size, self.subprotocols = count, size, subprotocols
        self.health_path = health_path
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.dir = new_tmpdir("backend-" + id)
        self.events_path = os.path.join(self.dir, "events.jsonl")
        self.proc = None

    @property
    def address(self):
        return f"{HOST}:{self.port}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()

    def start(self, timeout=10.0):
        argv = [PYTHON, BACKEND_PY, "--port", str(self.port), "--id", self.id,
                "--mode", self.mode, "--events", self.events_path]
        if self.count is not None:
            argv += ["--count", str(self.count)]
        if self.size is not None:
            argv += ["--size", str(self.size)]
        if self.subprotocols:
            argv += ["--subprotocols", ",".join(self.subprotocols)]
        if self.health_path:
            argv += ["--health-path", self.health_path]
        if self.tls_cert:
            argv += ["--tls-cert", self.tls_cert, "--tls-key", self.tls_key]
        with open(os.path.join(self.dir, "stderr"), "ab") as err:
            self.proc = _spawn(argv, stdout=subprocess.PIPE, stderr=err)
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.kill()
                raise HarnessError(f"backend {self.id} not listening after {timeout}s")
            chunk = os.read(fd, 256)
            if not chunk:
                raise HarnessError(f"backend {self.id} exited: "
                                   f"{_tail(os.path.join(self.dir, 'stderr'))}")
            buf += chunk
        m = re.match(rb"listening (\d+)", buf)
        if not m:
            raise HarnessError(f"backend {self.id} said {buf!r}")
        self.port = int(m.group(1))
        return self

    def events(self, event=None, wait_for=0, timeout=5.0):
        """Event records (optionally only kind <event>), polling until there
        are at least <wait_for> or <timeout> seconds pass."""
        def read():
            try:
                with open(self.events_path) as f:
                    records = [json.loads(l) for l in f.read().split("\n")[:-1] if l]
            except OSError:
                return []
            return [r for r in records if event is None or r["event"] == event]
        wait_until(lambda: len(read()) >= wait_for, timeout)
        return read()

    def close_events(self, wait_for=1, timeout=5.0):
        return self.events("close", wait_for, timeout)

    def _signal(self, sig):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self):
        """SIGTERM: the kernel closes its sockets (no close frames)."""
        self._signal(signal.SIGTERM)
        if self.proc is not None:
            self.proc.wait(timeout=5)

    def kill(self):
        if self.proc is not None:
            _kill_group(self.proc)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def pause(self):
        self._signal(signal.SIGSTOP)

    def resume(self):
        self._signal(signal.SIGCONT)


# --------------------------------------------------------------------------
# RFC 6455 framing (section 5.2), written out so tests can break the rules.

def accept_key(key):
    """Sec-WebSocket-Accept for <key> (RFC 6455 section 4.2.2)."""
    digest = hashlib.sha1((key + WS_GUID).encode()).digest()
    return base64.b64encode(digest).decode()


def new_key():
    return base64.b64encode(os.urandom(16)).decode()


def apply_mask(payload, mask_key):
    """XOR <payload> with the repeated 4-byte <mask_key> (section 5.3)."""
    n = len(payload)
    if n == 0:
        return b""
    stream = (mask_key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def encode_frame(opcode, payload=b"", fin=True, mask=True, rsv=0, mask_key=None):
    """One frame; <mask> False sends it unmasked, <rsv> sets RSV1-3 bits."""
    if isinstance(payload, str):
        payload = payload.encode()
    head = bytearray([(0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)])
    mask_bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head.append(mask_bit | n)
    elif n < 65536:
        head.append(mask_bit | 126)
        head += struct.pack(">H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack(">Q", n)
    if mask:
        mask_key = mask_key or os.urandom(4)
        head += mask_key
        payload = apply_mask(payload, mask_key)
    return bytes(head) + payload


def close_payload(code, reason=""):
    return struct.pack(">H", code) + reason.encode()


def parse_close(payload):
    """(code, reason) of a close frame's payload; (None, "") when empty."""
    if len(payload) < 2:
        return None, ""
    return struct.unpack(">H", payload[:2])[0], payload[2:].decode("utf-8", "replace")


class Frame:
    __slots__ = ("fin", "rsv", "opcode", "masked", "payload")

    def __init__(self, fin, rsv, opcode, masked, payload):
        self.fin, self.rsv, self.opcode = fin, rsv, opcode
        self.masked, self.payload = masked, payload

    def __repr__(self):
        return (f"Frame(op={self.opcode:#x}, fin={self.fin}, rsv={self.rsv}, "
                f"masked={self.masked}, len={len(self.payload)})")


def decode_frame(buf):
    """(Frame, bytes consumed) from the start of <buf>, or (None, 0) when
    <buf> does not hold a whole frame yet. Masked payloads are unmasked."""
    if len(buf) < 2:
        return None, 0
    b0, b1 = buf[0], buf[1]
    n = b1 & 0x7F
    pos = 2
    if n == 126:
        if len(buf) < 4:
            return None, 0
        n = struct.unpack_from(">H", buf, 2)[0]
        pos = 4
    elif n == 127:
        if len(buf) < 10:
            return None, 0
        n = struct.unpack_from(">Q", buf, 2)[0]
        pos = 10
    masked = bool(b1 & 0x80)
    mask_key = b""
    if masked:
        if len(buf) < pos + 4:
            return None, 0
        mask_key = bytes(buf[pos:pos + 4])
        pos += 4
    if len(buf) < pos + n:
        return None, 0
    payload = bytes(buf[pos:pos + n])
    if masked:
        payload = apply_mask(payload, mask_key)
    return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, masked, payload), pos + n


class FrameSocket:
    """Frames over a connected socket, either role; counts bytes both ways."""

    def __init__(self, sock, leftover=b"", mask=True):
        self.sock = sock
        self.buf = bytearray(leftover)
        self.mask = mask
        self.bytes_sent = 0
        self.bytes_received = len(leftover)
        self.pings = []   # payloads of pings skipped by recv_message/recv_close
        self.eof = False

    def send_raw(self, data):
        self.sock.sendall(data)
        self.bytes_sent += len(data)

    def send_frame(self, opcode, payload=b"", fin=True, mask=None, rsv=0):
        self.send_raw(encode_frame(opcode, payload, fin,
                                   self.mask if mask is None else mask, rsv))

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode())

    def send_binary(self, data):
        self.send_frame(OP_BINARY, data)

    def send_ping(self, payload=b""):
        self.send_frame(OP_PING, payload)

    def send_pong(self, payload=b""):
        self.send_frame(OP_PONG, payload)

    def send_close(self, code=1000, reason=""):
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    def recv_frame(self, timeout=5.0):
        """The next frame; None on EOF or reset; raises socket.timeout."""
        deadline = time.monotonic() + timeout
        while True:
            frame, used = decode_frame(self.buf)
            if frame is not None:
                del self.buf[:used]
                return frame
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout(f"no frame within {timeout}s")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(262144)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.eof = True
            self.bytes_received += len(chunk)
            self.buf += chunk

    def recv_message(self, timeout=5.0, answer_pings=False):
        """(opcode, payload) of the next data message, reassembled from its
        fragments; control frames in between are recorded (pings) or
        skipped. Returns (OP_CLOSE, payload) for a close frame, None on EOF."""
        deadline = time.monotonic() + timeout
        opcode, parts = None, []
        while True:
            frame = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if frame is None:
                return None
            if frame.opcode == OP_CLOSE:
                return OP_CLOSE, frame.payload
            if frame.opcode == OP_PING:
                self.pings.append(frame.payload)
                if answer_pings:
                    self.send_pong(frame.payload)
                continue
            if frame.opcode == OP_PONG:
                continue
            if opcode is None:
                opcode = frame.opcode
            parts.append(frame.payload)
            if frame.fin:
                return opcode, b"".join(parts)

    def recv_close(self, timeout=5.0):
        """(code, reason) of the next close frame, skipping other frames;
        None if the connection ends without one."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if frame is None:
                return None
            if frame.opcode == OP_PING:
                self.pings.append(frame.payload)
            if frame.opcode == OP_CLOSE:
                return parse_close(frame.payload)

    def wait_eof(self, timeout=5.0):
        """Reads and discards until EOF (recording pings); True if it came
        within <timeout>."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                frame = self.recv_frame(max(0.0, deadline - time.monotonic()))
                if frame is None:
                    return True
                if frame.opcode == OP_PING:
                    self.pings.append(frame.payload)
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()

    def abort(self):
        """Closes with RST instead of FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def upgrade_head(path="/", host=None, key=None, version="13", extra=(), omit=()):
    """A WebSocket upgrade request head; <extra> is a list of (name, value)
    pairs added at the end, <omit> names (lower-case) of headers to leave out."""
    fields = [("Host", host or f"{HOST}:80"), ("Upgrade", "websocket"),
              ("Connection", "Upgrade"), ("Sec-WebSocket-Key", key or new_key()),
              ("Sec-WebSocket-Version", version)]
    fields = [f for f in fields if f[0].lower() not in omit] + list(extra)
    text = f"GET {path} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields) + "\r\n"
    return text.encode()


def read_head(sock, timeout=5.0, limit=65536):
    """(head bytes incl. the blank line, bytes after it); raises
    HarnessError on EOF or timeout before a whole head arrived."""
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or len(buf) > limit:
            raise HarnessError(f"no complete head within {timeout}s: {buf[:200]!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            raise HarnessError(f"connection closed before a whole head: {buf[:200]!r}")
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    return buf[:end], buf[end:]


def parse_head(head):
    """(status or method line parts, {lower-case name: value}) of a head;
    repeated fields are joined with ", "."""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            name, value = name.strip().lower(), value.strip()
            headers[name] = headers[name] + ", " + value if name in headers else value
    return lines[0].split(" ", 2), headers


class RawWs(FrameSocket):
    """A client over a raw socket: masks by default, but can send anything."""

    def __init__(self, sock, leftover, status, headers, key):
        super().__init__(sock, leftover, mask=True)
        self.status, self.headers, self.key = status, headers, key

    @classmethod
    def connect(cls, port, path="/", extra=(), timeout=5.0, host=None):
        """Handshakes with ws://127.0.0.1:<port><path>; raises HarnessError
        unless the answer is a 101 with the right Sec-WebSocket-Accept."""
        sock = socket.create_connection((HOST, port), timeout=timeout)
        key = new_key()
        head = upgrade_head(path, host or f"{HOST}:{port}", key, extra=extra)
        sock.sendall(head)
        try:
            resp, leftover = read_head(sock, timeout)
        except HarnessError:
            sock.close()
            raise
        status_line, headers = parse_head(resp)
        status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
        if status != 101:
            sock.close()
            raise HarnessError(f"handshake answered {status_line} instead of 101")
        if headers.get("sec-websocket-accept") != accept_key(key):
            sock.close()
            raise HarnessError(f"bad Sec-WebSocket-Accept {headers.get('sec-websocket-accept')!r}")
        ws = cls(sock, leftover, status, headers, key)
        ws.bytes_sent = len(head)
        ws.bytes_received += len(resp)
        return ws


def raw_exchange(port, data, timeout=5.0, pace=None):
    """Sends <data> (one byte per <pace> seconds if given), then reads until
    the server closes; returns everything received. Raises socket.timeout
    if the server neither closes nor answers within <timeout>."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    received = b""
    deadline = time.monotonic() + timeout
    try:
        try:
            if pace is None:
                sock.sendall(data)
            else:
                for i in range(len(data)):
                    sock.sendall(data[i:i + 1])
                    time.sleep(pace)
        except (BrokenPipeError, ConnectionResetError):
            pass
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout(f"server still open after {timeout}s; got {received[:200]!r}")
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    finally:
        sock.close()
    return received


def parse_response(data):
    """(status, {lower-case header: value}, body) of raw response bytes;
    status 0 when <data> holds no complete head."""
    if b"\r\n\r\n" not in data:
        return 0, {}, data
    end = data.index(b"\r\n\r\n") + 4
    status_line, headers = parse_head(data[:end])
    try:
        status = int(status_line[1])
    except (IndexError, ValueError):
        status = 0
    return status, headers, data[end:]


def raw_request(port, data, timeout=5.0):
    """Sends raw request bytes and reads until close: (status, headers, body)."""
    return parse_response(raw_exchange(port, data, timeout))


# --------------------------------------------------------------------------
# In-process raw back ends that misbehave on purpose.

class RawBackend:
    """A listening socket served by <behavior>(rawbackend, sock) per
    connection, each in a daemon thread. Records request heads and, for
    behaviors that read frames, the frames received (`frames`)."""

    def __init__(self, behavior, **options):
        self.behavior, self.options = behavior, options
        self.heads, self.frames, self.events = [], [], []
        self.accepted = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.conns = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(128)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()
        _raw_backends.append(self)

    @property
    def address(self):
        return f"{HOST}:{self.port}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.conns.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        try:
            sock.settimeout(30)
            self.behavior(self, sock, **self.options)
        except (OSError, HarnessError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def record(self, kind, value=None):
        with self.lock:
            self.events.append((kind, value))

    def read_request(self, sock):
        head, leftover = read_head(sock, timeout=30)
        with self.lock:
            self.heads.append(head)
        return head, leftover

    def send_upgrade(self, sock, head, extra=()):
        _, headers = parse_head(head)
        key = headers.get("sec-websocket-key", "")
        fields = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                  ("Sec-WebSocket-Accept", accept_key(key))] + list(extra)
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\n" +
                     "".join(f"{n}: {v}\r\n" for n, v in fields).encode() + b"\r\n")

    def frames_of(self, opcode):
        with self.lock:
            return [f for f in self.frames if f.opcode == opcode]

    def stop(self):
        self.stopping.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            conns, self.conns = self.conns, []
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self in _raw_backends:
            _raw_backends.remove(self)


def recv_to_eof(sock):
    """Every byte <sock> delivers until the peer closes (its timeout applies
    to each recv)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def _drain_until_eof(rb, sock):
    while not rb.stopping.is_set():
        sock.settimeout(0.5)
        try:
            if not sock.recv(65536):
                return
        except socket.timeout:
            continue


def _reject(rb, sock, status, body, headers):
    rb.read_request(sock)
    reason = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
              503: "Service Unavailable"}.get(status, "Error")
    fields = [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
              ("Connection", "close")] + list(headers)
    sock.sendall(f"HTTP/1.1 {status} {reason}\r\n".encode() +
                 "".join(f"{n}: {v}\r\n" for n, v in fields).encode() + b"\r\n" + body)
    sock.shutdown(socket.SHUT_WR)
    _drain_until_eof(rb, sock)


def reject(status=403, body=b"forbidden by backend\n", headers=(("X-Backend", "raw"),)):
    """Answers the upgrade with <status>, <headers> and <body>, then closes."""
    return RawBackend(_reject, status=status, body=body, headers=headers)


def _wrong_accept(rb, sock):
    rb.read_request(sock)
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    _drain_until_eof(rb, sock)


def wrong_accept():
    """A 101 whose Sec-WebSocket-Accept does not match the key."""
    return RawBackend(_wrong_accept)


def _garbage(rb, sock):
    rb.read_request(sock)
    sock.sendall(b"\x00\xff\x13garbage, not HTTP at all\r\n\r\n")
    sock.shutdown(socket.SHUT_WR)
    _drain_until_eof(rb, sock)


def garbage():
    """Answers the request with non-HTTP bytes, then closes."""
    return RawBackend(_garbage)


def _greets_with_the_101(rb, sock):
    """Sends the 101 and two frames in one segment, then echoes frames."""
    head, leftover = rb.read_request(sock)
    key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")
           if l.lower().startswith(b"sec-websocket-key:")][0].decode()
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n" +
                 encode_frame(OP_TEXT, b"hello-1", mask=False) + encode_frame(OP_TEXT, b"hello-2", mask=False))
    fs = FrameSocket(sock, leftover, mask=False)
    while True:
        frame = fs.recv_frame(timeout=10)
        if frame is None or frame.opcode == OP_CLOSE:
            if frame is not None:
                fs.send_frame(OP_CLOSE, frame.payload)
            return
        rb.record("frame", frame.payload)
        fs.send_frame(frame.opcode, frame.payload)


def greets_with_the_101():
    """A 101 with two text frames (hello-1, hello-2) in its segment, then an echo."""
    return RawBackend(_greets_with_the_101)


def _silent_accept(rb, sock):
    _drain_until_eof(rb, sock)


def silent_accept():
    """Accepts TCP connections and never answers anything."""
    return RawBackend(_silent_accept)


def _upgrade_then_silence(rb, sock):
    head, _ = rb.read_request(sock)
    rb.send_upgrade(sock, head)
    _drain_until_eof(rb, sock)


def upgrade_then_silence():
    """A valid 101, then nothing: frames are read and dropped."""
    return RawBackend(_upgrade_then_silence)


def _upgrade_then_reset(rb, sock, echoes):
    head, leftover = rb.read_request(sock)
    rb.send_upgrade(sock, head)
    fs = FrameSocket(sock, leftover, mask=False)
    done = 0
    while done < echoes:
        frame = fs.recv_frame(timeout=30)
        if frame is None:
            return
        if frame.opcode in (OP_TEXT, OP_BINARY):
            fs.send_frame(frame.opcode, frame.payload)
            done += 1
    rb.record("reset")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def upgrade_then_reset(echoes=1):
    """A valid 101, echoes <echoes> data frames, then resets the TCP
    connection (RST, no close frame)."""
    return RawBackend(_upgrade_then_reset, echoes=echoes)


def _recorder(rb, sock, answer_pings, on_open, extra):
    head, leftover = rb.read_request(sock)
    rb.send_upgrade(sock, head, extra)
    fs = FrameSocket(sock, leftover, mask=False)
    for data in on_open:
        fs.send_raw(data)
    while not rb.stopping.is_set():
        try:
            frame = fs.recv_frame(timeout=0.5)
        except socket.timeout:
            continue
        if frame is None:
            rb.record("eof")
            return
        with rb.lock:
            rb.frames.append(frame)
        if frame.opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            fs.send_frame(frame.opcode, frame.payload, fin=frame.fin)
        elif frame.opcode == OP_PING and answer_pings:
            fs.send_frame(OP_PONG, frame.payload)
        elif frame.opcode == OP_CLOSE:
            rb.record("close", parse_close(frame.payload))
            fs.send_frame(OP_CLOSE, frame.payload)
            sock.shutdown(socket.SHUT_WR)
            _drain_until_eof(rb, sock)
            return


def recorder(answer_pings=True, on_open=(), extra=()):
    """A valid 101 (plus <extra> header pairs), sends the raw bytes in
    <on_open>, then records every frame received in `frames`: echoes data
    frames frame by frame (unmasked), answers pings when <answer_pings>,
    echoes a close frame and records ("close", (code, reason)); EOF
    without one records ("eof", None)."""
    return RawBackend(_recorder, answer_pings=answer_pings, on_open=list(on_open),
                      extra=list(extra))


# --------------------------------------------------------------------------
# websockets (asyncio) helpers.

def run_async(coro, timeout=30.0):
    """Runs <coro> to completion, bounded by <timeout> seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_connect(port, path="/", **kwargs):
    """websockets.connect to the gateway with test-friendly defaults (no
    client-side pings, no size limit, short timeouts)."""
    import websockets
    options = dict(ping_interval=None, max_size=None, open_timeout=5, close_timeout=2)
    options.update(kwargs)
    return websockets.connect(f"ws://{HOST}:{port}{path}", **options)


def whoami(port, path="/", extra=(), timeout=5.0):
    """The id of the echo Backend that answers a fresh session on <path>
    (its "whoami" command); the session is closed cleanly."""
    ws = RawWs.connect(port, path, extra=extra, timeout=timeout)
    try:
        ws.send_text("whoami")
        reply = ws.recv_message(timeout=timeout)
        if reply is None or reply[0] != OP_TEXT:
            raise AssertionError(f"whoami on {path}: answer {reply!r}")
        ws.send_close(1000)
        ws.recv_close(timeout=timeout)
        return reply[1].decode().removeprefix("id:")
    finally:
        ws.close()


# --------------------------------------------------------------------------
# Admin endpoint (/metrics, /healthz, /status).

def http_get(port, path, method="GET", timeout=5.0):
    """(status, {lower-case header: value}, body bytes) of one HTTP/1.1
    request to 127.0.0.1:<port>; reads until the server closes."""
    data = (f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Connection: close\r\n\r\n").encode()
    return raw_request(port, data, timeout)


def admin_status(port, timeout=5.0):
    """/status as a dict; raises AssertionError unless it is a 200 with JSON."""
    status, _, body = http_get(port, "/status", timeout=timeout)
    if status != 200:
        raise AssertionError(f"/status answered {status}: {body[:200]!r}")
    return json.loads(body)


def backend_up(status, pool, backend_id):
    """The `up` flag of back end <backend_id> of <pool> in a /status dict
    (None when it is not listed)."""
    for p in status.get("pools", []):
        if p.get("name") == pool:
            for b in p.get("backends", []):
                if b.get("id") == backend_id:
                    return b.get("up")
    return None


_METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
_SAMPLE_RE = re.compile(r"^(" + _METRIC_NAME + r")(?:\{(.*)\})? (\S+)(?: (-?\d+))?$")
_LABEL_RE = re.compile(_LABEL)
_METRIC_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class Metrics:
    """A strictly parsed Prometheus text exposition (format 0.0.4).

    `types` maps family name -> type, `helps` family -> help text and
    `samples` is a list of (name, {label: value}, float value) in order.
    """

    def __init__(self, types, helps, samples):
        self.types, self.helps, self.samples = types, helps, samples

    def get(self, name, **labels):
        """The value of the one sample <name> whose labels include <labels>
        (0 when there is none; AssertionError when several match)."""
        found = [v for n, l, v in self.samples
                 if n == name and all(l.get(k) == str(x) for k, x in labels.items())]
        if len(found) > 1:
            raise AssertionError(f"{len(found)} samples of {name} match {labels}")
        return found[0] if found else 0

    def total(self, name, **labels):
        """The sum over the samples <name> whose labels include <labels>."""
        return sum(v for n, l, v in self.samples
                   if n == name and all(l.get(k) == str(x) for k, x in labels.items()))


def _parse_labels(text, where):
    labels = {}
    pos = 0
    while pos < len(text):
        m = _LABEL_RE.match(text, pos)
        if not m:
            raise AssertionError(f"{where}: bad label syntax at {text[pos:]!r}")
        name = m.group(1)
        if name in labels:
            raise AssertionError(f"{where}: label {name} repeated")
        labels[name] = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1),
                              m.group(2))
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                raise AssertionError(f"{where}: expected ',' between labels, got {text[pos:]!r}")
            pos += 1
    return labels


def _family_of(name, types):
    """The declared family of sample <name> (histogram and summary samples
    carry a suffix)."""
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[:-len(suffix)]
        if name.endswith(suffix) and types.get(base) in ("histogram", "summary"):
            if suffix == "_bucket" and types[base] != "histogram":
                continue
            return base
    return None


def parse_prometheus(text):
    """Parses <text> strictly; raises AssertionError on the first problem:
    a line that is neither `# HELP`, `# TYPE`, another comment nor a sample
    `name{labels} value [timestamp]`; a TYPE declared twice or after its
    samples; a sample whose family has no TYPE; a family whose samples are
    not together; a repeated series; a value that is not a float; a counter
    below 0; a histogram whose buckets are not cumulative, do not end in
    le="+Inf", or whose _count differs from the +Inf bucket."""
    if not text.endswith("\n"):
        raise AssertionError("exposition does not end with a newline")
    types, helps, samples = {}, {}, []
    seen_series, finished, current = set(), set(), None
    for number, line in enumerate(text.split("\n")[:-1], 1):
        where = f"line {number} {line!r}"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not re.fullmatch(_METRIC_NAME, name):
                    raise AssertionError(f"{where}: bad metric name")
                if parts[1] == "TYPE":
                    if len(parts) != 4 or parts[3] not in _METRIC_TYPES:
                        raise AssertionError(f"{where}: bad TYPE line")
                    if name in types:
                        raise AssertionError(f"{where}: TYPE repeated")
                    if any(_family_of(n, {name: parts[3]}) == name for n, _, _ in samples):
                        raise AssertionError(f"{where}: TYPE after samples of {name}")
                    types[name] = parts[3]
                else:
                    if name in helps:
                        raise AssertionError(f"{where}: HELP repeated")
                    helps[name] = parts[3] if len(parts) == 4 else ""
            continue
        if not line.strip():
            raise AssertionError(f"{where}: blank line")
        m = _SAMPLE_RE.match(line)
        if not m:
            raise AssertionError(f"{where}: not a sample line")
        name, label_text, value_text = m.group(1), m.group(2), m.group(3)
        labels = _parse_labels(label_text, where) if label_text else {}
        try:
            value = float(value_text)
        except ValueError:
            raise AssertionError(f"{where}: value {value_text!r} is not a float")
        family = _family_of(name, types)
        if family is None:
            raise AssertionError(f"{where}: no TYPE declared for {name}")
        if family != current:
            if family in finished:
                raise AssertionError(f"{where}: samples of {family} are not together")
            if current is not None:
                finished.add(current)
            current = family
        series = (name, tuple(sorted(labels.items())))
        if series in seen_series:
            raise AssertionError(f"{where}: series repeated")
        seen_series.add(series)
        if types[family] == "counter" and value < 0:
            raise AssertionError(f"{where}: counter below 0")
        if types[family] == "histogram" and name == family:
            raise AssertionError(f"{where}: histogram sample without _bucket/_sum/_count")
        samples.append((name, labels, value))
    for family, kind in types.items():
        if kind == "histogram":
            _check_histogram(family, samples)
    return Metrics(types, helps, samples)


def _check_histogram(family, samples):
    groups = {}
    for name, labels, value in samples:
        if name in (family + "_bucket", family + "_sum", family + "_count"):
            rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            groups.setdefault(rest, []).append((name, labels, value))
    for rest, group in groups.items():
        buckets = [(l.get("le"), v) for n, l, v in group if n == family + "_bucket"]
        counts = [v for n, _, v in group if n == family + "_count"]
        sums = [v for n, _, v in group if n == family + "_sum"]
        what = f"histogram {family}{dict(rest) or ''}"
        if not buckets or buckets[-1][0] != "+Inf":
            raise AssertionError(f"{what}: buckets do not end in le=\"+Inf\": {buckets}")
        if len(counts) != 1 or len(sums) != 1:
            raise AssertionError(f"{what}: needs one _sum and one _count")
        bounds = []
        for le, _ in buckets:
            try:
                bounds.append(float(le))
            except (TypeError, ValueError):
                raise AssertionError(f"{what}: bad le {le!r}")
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise AssertionError(f"{what}: le bounds not strictly increasing: {bounds}")
        values = [v for _, v in buckets]
        if values != sorted(values):
            raise AssertionError(f"{what}: buckets not cumulative: {values}")
        if counts[0] != values[-1]:
            raise AssertionError(f"{what}: _count {counts[0]} != +Inf bucket {values[-1]}")


def scrape(port, timeout=5.0):
    """GET /metrics, checked (200, Prometheus text content type) and parsed."""
    status, headers, body = http_get(port, "/metrics", timeout=timeout)
    if status != 200:
        raise AssertionError(f"/metrics answered {status}: {body[:200]!r}")
    ctype = headers.get("content-type", "")
    if not ctype.startswith("text/plain") or "version=0.0.4" not in ctype:
        raise AssertionError(f"/metrics content type {ctype!r}")
    return parse_prometheus(body.decode("utf-8"))


# --------------------------------------------------------------------------
# Assertions and the test registry.

def check(condition, message):
    if not condition:
        raise AssertionError(message)


def check_eq(actual, expected, what):
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def check_between(value, low, high, what):
    if not (low <= value <= high):
        raise AssertionError(f"{what}: {value!r} not in [{low}, {high}]")


_tests = []


def test(fn=None, *, timeout=30):
    """Registers a test: `@test` or `@test(timeout=60)`. The function may
    return a string, printed after its PASS line."""
    def register(f):
        _tests.append((f.__name__, f, timeout))
        return f
    return register(fn) if fn is not None else register


def _on_alarm(signum, frame):
    # A second alarm while cleaning up: give up on this file.
    signal.signal(signal.SIGALRM, _on_hard_alarm)
    signal.setitimer(signal.ITIMER_REAL, 15)
    raise TestTimeout("test timed out")


def _on_hard_alarm(signum, frame):
    print("FAIL harness: cleanup after a timeout hung", flush=True)
    _cleanup_children()
    os._exit(1)


def _one_line(text):
    return " | ".join(l.strip() for l in str(text).splitlines() if l.strip())


def main():
    """Runs the registered tests (or those named in argv) in order."""
    global _keep_tmp
    wanted = set(sys.argv[1:])
    failed = 0
    for name, fn, timeout in _tests:
        if wanted and name not in wanted:
            continue
        _gateways.clear()
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            started = time.monotonic()
            detail = fn()
            for gw in _gateways:
                report = gw.sanitizer_report()
                if report:
                    raise AssertionError(f"sanitizer report from wsgate: {report}")
            signal.setitimer(signal.ITIMER_REAL, 0)
            took = time.monotonic() - started
            suffix = f": {detail}" if detail else ""
            print(f"PASS {name}{suffix} ({took:.1f}s)", flush=True)
        except Exception as e:
            signal.setitimer(signal.ITIMER_REAL, 0)
            failed += 1
            _keep_tmp = _keep_tmp or any(gw.proc is not None for gw in _gateways)
            why = str(e) if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"
            if isinstance(e, (TimeoutError, asyncio.TimeoutError)) and not str(e):
                why = "timed out waiting for wsgate (no answer)"
            if isinstance(e, TestTimeout):
                why = f"timed out after {timeout}s"
            print(f"FAIL {name}: {_one_line(why)}", flush=True)
            where = traceback.extract_tb(e.__traceback__)
            test_frames = [f for f in where if os.path.dirname(os.path.abspath(f.filename)) == HERE
                           and os.path.abspath(f.filename) != os.path.abspath(__file__)]
            if test_frames:
                f = test_frames[-1]
                print(f"    at {os.path.basename(f.filename)}:{f.lineno}: {f.line}", flush=True)
            for gw in _gateways:
                print(f"    wsgate {gw.tmpdir}: {gw.diagnostics()[:2000]}", flush=True)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, _on_alarm)
            _cleanup_children()
    if _keep_tmp:
        print(f"    (temporary files kept in {_root_tmp})", flush=True)
    sys.exit(1 if failed else 0)


# --------------------------------------------------------------------------
# DNS: back ends on other loopback addresses and a real DNS server
# (tests/integration/43_discovery.py).

class HostBackend(Backend):
    """An echo Backend listening on <host> (any address of 127.0.0.0/8),
    so that several back ends can share one port under one DNS name."""

    def __init__(self, host, **kwargs):
        super().__init__(**kwargs)
        self.host = host

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def start(self, timeout=10.0):
        global _spawn
        spawn = _spawn
        _spawn = lambda argv, **kw: spawn(argv + ["--host", self.host], **kw)
        try:
            return super().start(timeout)
        finally:
            _spawn = spawn


def dns_query(port, name, qtype, timeout=1.0):
    """(rcode, answer count) of one UDP query for <name> of type <qtype>
    (1 = A, 28 = AAAA, 33 = SRV) to 127.0.0.1:<port>, or None on timeout."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    ident = int.from_bytes(os.urandom(2), "big")
    message = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(message, (HOST, port))
        try:
            data = s.recv(4096)
        except (socket.timeout, ConnectionRefusedError):
            return None
    return data[3] & 15, struct.unpack(">H", data[6:8])[0]


class Dnsmasq:
    """dnsmasq (Debian dnsmasq-base) in the foreground on a free UDP/TCP port
    of 127.0.0.1, authoritative for the domain "test" (a name it does not
    know is NXDOMAIN, an AAAA query for an IPv4-only name NOERROR and empty),
    answering with TTL 0 and never forwarding.

    <hosts> maps a name to its addresses (an --addn-hosts file: set_hosts()
    rewrites it and sends SIGHUP, which re-reads it). <srv> is a list of
    (name, target, port, priority, weight) in a --conf-file: dnsmasq reads
    SRV records only at start, so set_srv() restarts it on the same port.
    """

    def __init__(self, hosts=None, srv=None):
        self.dir = new_tmpdir("dnsmasq")
        self.port = free_port()
        self.hosts_path = os.path.join(self.dir, "hosts")
        self.conf_path = os.path.join(self.dir, "dnsmasq.conf")
        self.log_path = os.path.join(self.dir, "dnsmasq.log")
        self.proc = None
        self._write_hosts(hosts or {})
        self._write_srv(srv or [])

    def _write_hosts(self, hosts):
        with open(self.hosts_path + ".new", "w") as f:
            for name, addresses in hosts.items():
                for address in addresses:
                    f.write(f"{address} {name}\n")
        os.replace(self.hosts_path + ".new", self.hosts_path)

    def _write_srv(self, srv):
        with open(self.conf_path, "w") as f:
            for name, target, port, priority, weight in srv:
                f.write(f"srv-host={name},{target},{port},{priority},{weight}\n")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()

    def start(self, timeout=10.0):
        import grp
        import pwd
        argv = ["/usr/sbin/dnsmasq", "--keep-in-foreground", f"--port={self.port}",
                f"--listen-address={HOST}", "--bind-interfaces", "--no-resolv", "--no-hosts",
                "--local=/test/", f"--addn-hosts={self.hosts_path}", f"--conf-file={self.conf_path}",
                "--pid-file=", "--local-ttl=0", "--cache-size=0",
                f"--user={pwd.getpwuid(os.getuid()).pw_name}", f"--group={grp.getgrgid(os.getgid()).gr_name}",
                f"--log-facility={self.log_path}"]
        with open(os.path.join(self.dir, "stderr"), "ab") as err:
            self.proc = _spawn(argv, stdout=subprocess.DEVNULL, stderr=err)
        ok = wait_until(lambda: self.proc.poll() is None and dns_query(self.port, "ready.test", 1, 0.2) is not None,
                        timeout)
        if not ok:
            self.kill()
            raise HarnessError(f"dnsmasq not answering after {timeout}s: {_tail(os.path.join(self.dir, 'stderr'))}")
        return self

    def set_hosts(self, hosts, timeout=5.0):
        """Rewrites the hosts file and waits until dnsmasq has re-read it."""
        def reads():
            try:
                with open(self.log_path) as f:
                    return f.read().count(f"read {self.hosts_path}")
            except OSError:
                return 0
        before = reads()
        self._write_hosts(hosts)
        self.proc.send_signal(signal.SIGHUP)
        if not wait_until(lambda: reads() > before, timeout):
            raise HarnessError("dnsmasq did not re-read its hosts file")

    def set_srv(self, srv):
        """New SRV records: dnsmasq is restarted on the same port."""
        self._write_srv(srv)
        self.kill()
        self.start()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            _kill_group(self.proc)
            self.proc.wait()
        self.proc = None


# --------------------------------------------------------------------------
# Admin API (drain / enable of one back end).

def admin_request(port, method, path, token=None, timeout=5.0):
    """(status, {lower-case header: value}, JSON body or None) of one admin
    request; <token> adds "Authorization: Bearer <token>"."""
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    data = (f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{auth}"
            f"Content-Length: 0\r\nConnection: close\r\n\r\n").encode()
    status, headers, body = raw_request(port, data, timeout)
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        raise AssertionError(f"{method} {path}: {status} with a body that is not JSON: {body[:200]!r}")
    return status, headers, doc


def backend_state(status, pool, backend_id):
    """The "state" of back end <backend_id> of <pool> in a /status dict
    (None when it is not listed)."""
    found = [b.get("state") for p in status.get("pools", []) if p.get("name") == pool
             for b in p.get("backends", []) if b.get("id") == backend_id]
    return found[0] if found else None
