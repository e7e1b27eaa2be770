"""Binary upgrade (SIGUSR2): a new copy of the executable takes over the
listening sockets without refusing a connection; the old process closes its
sessions with 1001 spread over server.drain_timeout and exits. A failed
upgrade (broken config, crash, missing file) leaves the old one serving and
the pid file naming it, never missing. Drives proxy/runtime/upgrade.cpp
(fork/exec, ready pipe, pid file), proxy/runtime/server_upgrade.cpp (adopt,
hand over) and the hand-off drain (proxy/runtime/worker_handoff.cpp,
Session::hand_off).

Which process served a session is told by its access log: the configuration
the new process reads names other log files (access2.log, error2.log)."""

import json
import os
import re
import shutil
import signal
import socket
import threading
import time
from contextlib import ExitStack

from harness import (HOST, OP_CLOSE, OP_TEXT, Backend, RawWs, Wsgate, accept_key, check, check_eq,
                     close_payload, decode_frame, encode_frame, free_port, main, new_key, new_tmpdir,
                     parse_close, parse_head, port_is_listening, read_head, render_config,
                     sanitizer_build, test, upgrade_head, wait_until, wsgate_binary, HarnessError)

DRAIN = 2.0            # server.drain_timeout of every test here
OLD_SESSIONS = 30      # sessions echoing across the upgrade
LOOP_RATE = 220        # new sessions per second asked for during the upgrade (~200 reached)
LOOP_THREADS = 5


# --------------------------------------------------------------------------
# Helpers

class BinaryCopy:
    """Runs wsgate from a copy in a temporary directory (so that the test
    can replace the file on disk): Wsgate objects started inside the block
    use <dir>/wsgate."""

    def __init__(self):
        sanitizer_build()  # cached from the real build before WSGATE_BUILD moves
        self.real = wsgate_binary()
        self.dir = new_tmpdir("bin")
        self.path = os.path.join(self.dir, "wsgate")
        shutil.copy2(self.real, self.path)

    def __enter__(self):
        self.saved = os.environ.get("WSGATE_BUILD")
        os.environ["WSGATE_BUILD"] = self.dir
        return self

    def __exit__(self, *exc):
        if self.saved is None:
            os.environ.pop("WSGATE_BUILD", None)
        else:
            os.environ["WSGATE_BUILD"] = self.saved

    def replace_with_binary(self):
        """A new file (new inode) at the path, as a package upgrade does."""
        tmp = self.path + ".new"
        shutil.copy2(self.real, tmp)
        os.replace(tmp, self.path)

    def replace_with_script(self, body):
        tmp = self.path + ".new"
        with open(tmp, "w") as f:
            f.write("#!/bin/sh\n" + body + "\n")
        os.chmod(tmp, 0o755)
        os.replace(tmp, self.path)


class NotifySocket:
    """systemd's notify socket (sd_notify(3)) stand-in: collects datagrams."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.messages = []

    def drain(self):
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode(errors="replace"))
            except BlockingIOError:
                return self.messages


def read_pid(path):
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    return int(text) if text.strip().isdigit() else text


class PidWatcher(threading.Thread):
    """Reads the pid file every ~2 ms: every value seen, and how often the
    file was missing or unreadable."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.values, self.missing, self.reads = path, [], 0, 0
        self.stop_flag = threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            value = read_pid(self.path)
            self.reads += 1
            if not isinstance(value, int):
                self.missing += 1
            elif not self.values or self.values[-1] != value:
                self.values.append(value)
            time.sleep(0.002)

    def stop(self):
        self.stop_flag.set()
        self.join(5)


def recv_frame(ws, timeout):
    """The next frame of <ws>, None on EOF; a reset raises ConnectionResetError
    (unlike the harness's reader, which reports it as EOF)."""
    deadline = time.monotonic() + timeout
    while True:
        frame, used = decode_frame(ws.buf)
        if frame is not None:
            del ws.buf[:used]
            return frame
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no frame")
        ws.sock.settimeout(left)
        chunk = ws.sock.recv(65536)
        if not chunk:
            return None
        ws.buf += chunk


def finish_close(ws):
    """Answers a close frame and waits for the server's EOF; False on a reset."""
    try:
        ws.send_close(1001)
        while recv_frame(ws, 5) is not None:
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return False
    except socket.timeout:
        return True


class EchoSession(threading.Thread):
    """A session opened before the upgrade that echoes a message every 50 ms
    until the proxy closes it: outcome "1001" (close frame with that code,
    close handshake completed), "close CODE", "eof" (no close frame), "reset"
    or "timeout"."""

    def __init__(self, port, path, until):
        super().__init__(daemon=True)
        self.ws = RawWs.connect(port, path)
        self.until = until
        self.echoes, self.outcome, self.closed_at = 0, None, None

    def run(self):
        n = 0
        try:
            while time.monotonic() < self.until:
                text = f"m{n}"
                n += 1
                self.ws.send_text(text)
                frame = recv_frame(self.ws, 5)
                if frame is None:
                    self.outcome = "eof"
                    return
                if frame.opcode == OP_CLOSE:
                    code, _ = parse_close(frame.payload)
                    self.closed_at = time.monotonic()
                    ok = finish_close(self.ws)
                    self.outcome = str(code) if ok and code == 1001 else (f"close {code}" if ok else "reset")
                    return
                if frame.opcode == OP_TEXT and frame.payload == text.encode():
                    self.echoes += 1
                time.sleep(0.05)
            self.outcome = "timeout"
        except (ConnectionResetError, BrokenPipeError):
            self.outcome = "reset"
        except socket.timeout:
            self.outcome = "timeout"
        finally:
            self.ws.close()


class SessionLoop:
    """<threads> clients opening sessions at <rate>/s in total: connect,
    handshake, one echo, close. Each session's path is /loop/N; outcomes
    are counted and each session's start time kept."""

    def __init__(self, port, rate=LOOP_RATE, threads=LOOP_THREADS):
        self.port, self.interval = port, threads / rate
        self.lock = threading.Lock()
        self.counts = {"attempted": 0, "ok": 0, "1001": 0, "refused": 0, "reset": 0, "failed_handshake": 0,
                       "timeout": 0, "other": 0}
        self.started = {}   # N -> monotonic start time
        self.failures = []  # (N, outcome, step) of sessions that did not end "ok" or "1001"
        self.next = 0
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self):
        self.t0 = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(15)
        self.elapsed = time.monotonic() - self.t0

    def _count(self, key):
        with self.lock:
            self.counts[key] += 1

    def _run(self):
        due = time.monotonic()
        while not self.stop_flag.is_set():
            with self.lock:
                n = self.next
                self.next += 1
                self.counts["attempted"] += 1
                self.started[n] = time.monotonic()
            step = ["connect"]
            outcome = self._one(n, step)
            self._count(outcome)
            if outcome not in ("ok", "1001"):
                with self.lock:
                    self.failures.append((n, outcome, step[0], round(self.started[n] - self.t0, 3)))
            due += self.interval
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                due = time.monotonic()

    def _one(self, n, step):
        try:
            sock = socket.create_connection((HOST, self.port), timeout=5)
        except ConnectionRefusedError:
            return "refused"
        except ConnectionResetError:
            return "reset"
        except OSError:
            return "other"
        try:
            key = new_key()
            step[0] = "handshake"
            sock.sendall(upgrade_head(f"/loop/{n}", f"{HOST}:{self.port}", key))
            try:
                head, leftover = read_head(sock, 5)
            except HarnessError:
                return "failed_handshake"
            status_line, headers = parse_head(head)
            if len(status_line) < 2 or status_line[1] != "101" or headers.get("sec-websocket-accept") != accept_key(key):
                return "failed_handshake"
            ws = RawWs(sock, leftover, 101, headers, key)
            step[0] = "echo"
            ws.send_text(f"hello {n}")
            frame = recv_frame(ws, 5)
            if frame is None:
                return "reset"
            if frame.opcode == OP_CLOSE:
                code, _ = parse_close(frame.payload)
                return "1001" if code == 1001 and finish_close(ws) else "other"
            if frame.opcode != OP_TEXT or frame.payload != f"hello {n}".encode():
                return "other"
            step[0] = "close"
            ws.send_close(1000)
            while recv_frame(ws, 5) is not None:
                pass
            return "ok"
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        except socket.timeout:
            return "timeout"
        finally:
            sock.close()


def log_paths(path):
    """Request paths in an access log (JSON lines)."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line)["path"])
    except FileNotFoundError:
        pass
    return out


def wait_gone(pid, timeout):
    """True once <pid> has exited (gone, or a zombie nobody reaped yet)."""
    def gone():
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True
    return wait_until(gone, timeout, interval=0.02)


def child_of(pid):
    """The first child process of <pid>'s main thread, or None."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
    except FileNotFoundError:
        return None
    return int(children[0]) if children else None


def config_for(gw, admin_port, pid_file, workers, suffix="", listeners=None, backends=()):
    """render_config() text for <gw>'s port with logs named access<suffix>.log."""
    return render_config(gw.port, gw.tmpdir, backends=list(backends), admin=f"{HOST}:{admin_port}",
                         listeners=listeners,
                         server={"workers": workers, "drain_timeout": f"{int(DRAIN)}s", "pid_file": pid_file},
                         log={"access": os.path.join(gw.tmpdir, f"access{suffix}.log"),
                              "error": os.path.join(gw.tmpdir, f"error{suffix}.log")})


def start_gateway(stack, backend, workers, listeners=None):
    tmp = new_tmpdir("wsgate")
    port, admin_port = free_port(), free_port()
    pid_file = os.path.join(tmp, "wsgate.pid")
    gw = Wsgate({"port": port, "backends": [backend], "admin": f"{HOST}:{admin_port}", "listeners": listeners,
                 "server": {"workers": workers, "drain_timeout": f"{int(DRAIN)}s", "pid_file": pid_file}}, tmpdir=tmp)
    stack.enter_context(gw)
    check(wait_until(lambda: read_pid(pid_file) == gw.pid, 5), f"pid file does not name {gw.pid}: {read_pid(pid_file)}")
    return gw, admin_port, pid_file


# --------------------------------------------------------------------------
# Tests

def upgrade_under_load(workers):
    with ExitStack() as stack:
        binary = stack.enter_context(BinaryCopy())
        backend = stack.enter_context(Backend("echo", id="b1"))
        notify = NotifySocket(os.path.join(new_tmpdir("notify"), "notify.sock"))
        stack.callback(notify.sock.close)
        os.environ["NOTIFY_SOCKET"] = notify.path
        try:
            gw, admin_port, pid_file = start_gateway(stack, backend, workers)
        finally:
            os.environ.pop("NOTIFY_SOCKET")
        old_pid = gw.pid
        exited = []
        threading.Thread(target=lambda: exited.append((gw.proc.wait(), time.monotonic())), daemon=True).start()
        until = time.monotonic() + 30
        sessions = [EchoSession(gw.port, f"/old/{i}", until) for i in range(OLD_SESSIONS)]
        for s in sessions:
            s.start()
        watcher = PidWatcher(pid_file)
        watcher.start()
        loop = SessionLoop(gw.port).start()
        try:
            time.sleep(1.0)
            # The executable is replaced on disk and the new process reads a
            # configuration that names other log files.
            binary.replace_with_binary()
            with open(gw.config_path, "w") as f:
                f.write(config_for(gw, admin_port, pid_file, workers, "2", backends=[backend]))
            t_usr2 = time.monotonic()
            gw.signal(signal.SIGUSR2)
            check(wait_until(lambda: read_pid(pid_file) not in (old_pid, None), 10),
                  f"pid file still names {read_pid(pid_file)} 10 s after SIGUSR2: {gw.diagnostics()}")
            t_ready = time.monotonic()
            new_pid = read_pid(pid_file)
            time.sleep(1.5)
        finally:
            loop.stop()
        stack.callback(lambda: os.kill(new_pid, signal.SIGKILL) if not wait_gone(new_pid, 0) else None)
        for s in sessions:
            s.join(DRAIN + 8)
        check(wait_until(lambda: exited, DRAIN + 4, interval=0.02),
              f"old process {old_pid} still running {time.monotonic() - t_ready:.1f}s after the hand-over")
        check_eq(exited[0][0], 0, "old process exit status")
        t_exit = exited[0][1]
        watcher.stop()

        counts = loop.counts
        outcomes = [s.outcome for s in sessions]
        closed_1001 = outcomes.count("1001")
        for bad in ("refused", "reset", "failed_handshake", "timeout", "other"):
            check_eq(counts[bad], 0, f"loop sessions {bad} ({counts}; t_ready {t_ready - loop.t0:.3f}s; "
                                     f"failures {loop.failures[:10]})")
        check_eq(closed_1001, OLD_SESSIONS, f"old sessions closed with 1001 (outcomes {outcomes})")
        check(all(s.echoes > 0 for s in sessions), "an old session never echoed")
        closes = sorted(s.closed_at - t_ready for s in sessions)
        check(closes[-1] - closes[0] >= 0.5, f"1001 closes not spread over the drain window: {closes}")
        check(closes[-1] <= DRAIN + 1.5, f"last 1001 {closes[-1]:.2f}s after the hand-over (drain {DRAIN}s)")
        check(t_exit - t_ready <= DRAIN + 2.5, f"old process exited {t_exit - t_ready:.2f}s after the hand-over")
        check_eq(watcher.missing, 0, f"pid file reads that found no pid (of {watcher.reads})")
        check_eq(watcher.values, [old_pid, new_pid], "pids the pid file named")
        # systemd follows the new process; the old one's exit is not a stop.
        messages = [m.splitlines() for m in notify.drain()]
        check_eq([m for m in messages if "READY=1" in m],
                 [[f"MAINPID={old_pid}", "READY=1", "STATUS=serving"], [f"MAINPID={new_pid}", "READY=1", "STATUS=serving"]],
                 "READY=1 notifications")
        check(not any("STOPPING=1" in m for m in messages), f"STOPPING=1 sent during the upgrade: {messages}")

        # Who served what: old process -> access.log, new one -> access2.log.
        old_paths = set(log_paths(os.path.join(gw.tmpdir, "access.log")))
        new_paths = set(log_paths(os.path.join(gw.tmpdir, "access2.log")))
        check_eq({p for p in old_paths if p.startswith("/old/")}, {f"/old/{i}" for i in range(OLD_SESSIONS)},
                 "old sessions logged by the old process")
        with open(os.path.join(gw.tmpdir, "access.log")) as f:
            old_entries = [json.loads(l) for l in f if '"/old/' in l]
        check_eq({(e["close_code"], e["reason"]) for e in old_entries}, {(1001, "upgrade")}, "old sessions' close in the access log")
        late = [n for n, t in loop.started.items() if t > t_ready + 0.3]
        check(len(late) > 50, f"only {len(late)} loop sessions after the hand-over")
        on_old = [n for n in late if f"/loop/{n}" in old_paths]
        check_eq(on_old, [], "sessions opened after the hand-over that the old process served")
        check(wait_until(lambda: all(f"/loop/{n}" in set(log_paths(os.path.join(gw.tmpdir, "access2.log")))
                                     for n in late), 5),
              "sessions opened after the hand-over missing from the new process's access log")
        before = [n for n, t in loop.started.items() if t < t_usr2]
        check(all(f"/loop/{n}" in old_paths for n in before), "sessions before SIGUSR2 not served by the old process")

        # The new process runs the replaced file, serves, and answers on the
        # inherited admin listener.
        check_eq(os.stat(f"/proc/{new_pid}/exe").st_ino, os.stat(binary.path).st_ino, "inode the new process runs")
        new_log = open(os.path.join(gw.tmpdir, "error2.log")).read()
        check("upgrade: listening on inherited sockets" in new_log, "new process did not adopt the sockets")
        check(port_is_listening(gw.port), "port not listening after the old process exited")
        ws = RawWs.connect(gw.port, "/after")
        ws.send_text("after")
        check_eq(ws.recv_message(), (OP_TEXT, b"after"), "echo through the new process")
        ws.close()
        os.kill(new_pid, signal.SIGTERM)
        check(wait_gone(new_pid, DRAIN + 3), "new process did not stop on SIGTERM")
        check(wait_until(lambda: not os.path.exists(pid_file), 2), "pid file left behind at a normal exit")
        rate = counts["attempted"] / loop.elapsed
        return (f"workers={workers}: connections attempted {counts['attempted']} ({rate:.0f}/s over "
                f"{loop.elapsed:.1f}s), refused {counts['refused']}, reset {counts['reset']}, failed handshakes "
                f"{counts['failed_handshake']}, loop sessions closed 1001 {counts['1001']}; old sessions closed "
                f"with 1001 {closed_1001}/{OLD_SESSIONS} between {closes[0]:.2f}s and {closes[-1]:.2f}s; old pid "
                f"exited {t_exit - t_ready:.2f}s after the hand-over ({t_ready - t_usr2:.2f}s from SIGUSR2 to ready)")


@test(timeout=60)
def usr2_upgrade_under_load_one_worker():
    """workers = 1, the binary replaced on disk before SIGUSR2: 30 sessions
    echo every 50 ms and a client loop opens ~200 sessions/s across the
    upgrade. No connection is refused, reset or fails its handshake; each
    old session gets close 1001 (spread over drain_timeout 2s) after echoing
    until then; sessions opened after the hand-over are served by the new
    process (its own access log); the old pid exits 0 in time; the pid file
    goes from the old pid to the new one without ever missing; the new
    process runs the new file and removes the pid file at its exit."""
    return upgrade_under_load(1)


@test(timeout=60)
def usr2_upgrade_under_load_two_workers():
    """The same with workers = 2: two SO_REUSEPORT sockets per listener,
    each inherited by the worker of the same index."""
    return upgrade_under_load(2)


@test(timeout=60)
def failed_upgrades_keep_the_old_process_serving():
    """A broken configuration, a second SIGUSR2 during an upgrade (refused),
    a new process that crashes before it is ready, and a missing executable:
    each attempt fails with its reason logged, the old process keeps serving
    (an open session keeps echoing, new sessions are accepted) and the pid
    file names it all along (read every 2 ms). Then a good upgrade works."""
    with ExitStack() as stack:
        binary = stack.enter_context(BinaryCopy())
        backend = stack.enter_context(Backend("echo", id="b1"))
        gw, admin_port, pid_file = start_gateway(stack, backend, 1)
        good_config = open(gw.config_path).read()
        watcher = PidWatcher(pid_file)
        watcher.start()
        ws = RawWs.connect(gw.port, "/kept")

        def still_serving(what):
            ws.send_text(what)
            check_eq(ws.recv_message(), (OP_TEXT, what.encode()), f"open session echo after {what}")
            fresh = RawWs.connect(gw.port, f"/after-{what}")
            fresh.send_text("x")
            check_eq(fresh.recv_message(), (OP_TEXT, b"x"), f"new session after {what}")
            fresh.close()
            check(gw.proc.poll() is None, f"old process exited after {what}")

        with open(gw.config_path, "a") as f:
            f.write("\n[server\n")
        since = gw.error_log_offset()
        gw.signal(signal.SIGUSR2)
        check(gw.wait_error_log(r"upgrade failed: new process \d+ closed its readiness pipe before it was ready "
                                r"and exited with status 1; this process keeps serving", 10, since),
              f"no failure line for the broken config: {gw.diagnostics()}")
        still_serving("broken-config")

        with open(gw.config_path, "w") as f:
            f.write(good_config)
        binary.replace_with_script("sleep 1\nkill -SEGV $$")
        since = gw.error_log_offset()
        gw.signal(signal.SIGUSR2)
        check(gw.wait_error_log(r"upgrade: started .* as pid \d+", 5, since), "no 'started' line")
        gw.signal(signal.SIGUSR2)
        check(gw.wait_error_log(r"SIGUSR2 refused: an upgrade is already in progress \(new process \d+\)", 5, since),
              "second SIGUSR2 not refused")
        check(gw.wait_error_log(r"upgrade failed: new process \d+ closed its readiness pipe before it was ready "
                                r"and killed by signal 11", 10, since),
              f"no failure line for the crash: {gw.diagnostics()}")
        still_serving("crash")

        os.remove(binary.path)
        since = gw.error_log_offset()
        gw.signal(signal.SIGUSR2)
        check(gw.wait_error_log(r"upgrade failed: new process \d+ could not be executed: No such file or directory",
                                10, since), f"no failure line for the missing executable: {gw.diagnostics()}")
        still_serving("missing-file")

        check_eq(watcher.missing, 0, f"pid file reads that found no pid (of {watcher.reads})")
        check_eq(watcher.values, [gw.pid], "pids the pid file named during the failed upgrades")

        binary.replace_with_binary()
        gw.signal(signal.SIGUSR2)
        check(wait_until(lambda: read_pid(pid_file) not in (gw.pid, None), 10), "good upgrade after the failures")
        new_pid = read_pid(pid_file)
        stack.callback(lambda: os.kill(new_pid, signal.SIGKILL) if not wait_gone(new_pid, 0) else None)
        check_eq(ws.recv_close(timeout=DRAIN + 3), (1001, "upgrade"), "close frame of the open session")
        ws.close()
        check(wait_until(lambda: gw.proc.poll() is not None, DRAIN + 4), "old process did not exit")
        watcher.stop()
        check_eq(watcher.missing, 0, f"pid file reads that found no pid (of {watcher.reads})")
        check_eq(watcher.values, [gw.pid, new_pid], "pids the pid file named")
        os.kill(new_pid, signal.SIGTERM)
        check(wait_gone(new_pid, DRAIN + 3), "new process did not stop on SIGTERM")
        return f"pid file read {watcher.reads} times, never missing; 3 failed attempts, 1 refused, then upgraded"


@test(timeout=60)
def queued_connections_are_accepted_by_someone():
    """workers = 2, listeners A and B; the new configuration drops B and adds C. The
    executable is replaced by a script that waits 0.5 s before it runs the
    real one, so the test can stop (SIGSTOP) the old process while the new
    one starts. With the old process stopped, 10 clients connect to A and
    10 to B and send their handshakes: those on A are served by the new
    process from the shared accept queues at once; those on B wait in B's
    queue (the new process closed its copy). On SIGCONT the old process
    reads the ready line, accepts B's queue before it closes B, and serves
    them (then 1001). No connection is refused or reset. A listener C that
    the new configuration adds is bound fresh and served."""
    with ExitStack() as stack:
        binary = stack.enter_context(BinaryCopy())
        backend = stack.enter_context(Backend("echo", id="b1"))
        port_b = free_port()
        port_a = free_port()
        port_c = free_port()
        gw, admin_port, pid_file = start_gateway(stack, backend, 2, listeners=[f"{HOST}:{port_a}", f"{HOST}:{port_b}"])
        old_pid = gw.pid
        with open(gw.config_path, "w") as f:
            f.write(config_for(gw, admin_port, pid_file, 2, "2", listeners=[f"{HOST}:{port_a}", f"{HOST}:{port_c}"],
                               backends=[backend]))
        binary.replace_with_script(f"sleep 0.5\nexec {binary.real} \"$@\"")
        gw.signal(signal.SIGUSR2)
        child = wait_until(lambda: child_of(old_pid), 5, interval=0.001)
        check(child, "no new process started")
        os.kill(old_pid, signal.SIGSTOP)
        stack.callback(lambda: os.kill(old_pid, signal.SIGCONT) if gw.proc.poll() is None else None)
        check(wait_until(lambda: read_pid(pid_file) == child, 10), f"new process not ready: {read_pid(pid_file)}")
        new_log = os.path.join(gw.tmpdir, "error2.log")
        check(wait_until(lambda: "telling the old process" in open(new_log).read(), 5), "no ready line in error2.log")

        def open_raw(port, path):
            sock = socket.create_connection((HOST, port), timeout=5)
            key = new_key()
            sock.sendall(upgrade_head(path, f"{HOST}:{port}", key))
            return sock, key

        on_a = [open_raw(port_a, f"/a/{i}") for i in range(10)]
        on_b = [open_raw(port_b, f"/b/{i}") for i in range(10)]

        def handshake(sock, key, path, close_ok=False):
            """101 and an echo; on the old process (<close_ok>) its spread
            1001 may come first: then (None, code)."""
            head, leftover = read_head(sock, 8)
            status_line, headers = parse_head(head)
            check_eq(status_line[1], "101", f"status for {path}")
            ws = RawWs(sock, leftover, 101, headers, key)
            ws.send_text(path)
            frame = recv_frame(ws, 5)
            check(frame is not None, f"{path}: EOF instead of the echo")
            if close_ok and frame.opcode == OP_CLOSE:
                check(finish_close(ws), f"{path}: reset after the close frame")
                return None, parse_close(frame.payload)[0]
            check_eq((frame.opcode, frame.payload), (OP_TEXT, path.encode()), f"echo on {path}")
            return ws, None

        a_sessions = [handshake(s, k, f"/a/{i}")[0] for i, (s, k) in enumerate(on_a)]
        check(gw.proc.poll() is None and child_of(old_pid) == child, "old process gone while stopped")
        os.kill(old_pid, signal.SIGCONT)
        b_results = [handshake(s, k, f"/b/{i}", close_ok=True) for i, (s, k) in enumerate(on_b)]
        resets = 0
        codes = [code for ws, code in b_results if ws is None]
        for ws in (ws for ws, _ in b_results if ws is not None):
            try:
                frame = recv_frame(ws, DRAIN + 3)
                while frame is not None and frame.opcode != OP_CLOSE:
                    frame = recv_frame(ws, DRAIN + 3)
                check(frame is not None, "EOF without a close frame on B")
                codes.append(parse_close(frame.payload)[0])
                if not finish_close(ws):
                    resets += 1
            except ConnectionResetError:
                resets += 1
        check_eq(resets, 0, "connections on B reset")
        check_eq(codes, [1001] * 10, "close codes on B")
        check(wait_until(lambda: gw.proc.poll() is not None, DRAIN + 4), "old process did not exit")
        check(wait_until(lambda: not port_is_listening(port_b), 2), "B still listening after the old process exited")
        c = RawWs.connect(port_c, "/c/0")  # the listener the new configuration added, bound fresh
        c.send_text("c")
        check_eq(recv_frame(c, 5).payload, b"c", "echo on the added listener C")
        c.close()
        for ws in a_sessions:
            ws.send_text("still")
            check_eq(recv_frame(ws, 5).payload, b"still", "A sessions on the new process after the old exited")
            ws.close()
        old_paths = set(log_paths(os.path.join(gw.tmpdir, "access.log")))
        check_eq({p for p in old_paths if p.startswith("/b/")}, {f"/b/{i}" for i in range(10)},
                 "B's queued sessions served by the old process")
        check_eq({p for p in old_paths if p.startswith("/a/")}, set(), "A sessions served by the old process")
        os.kill(child, signal.SIGTERM)
        check(wait_gone(child, DRAIN + 3), "new process did not stop")
        new_paths = {p for p in log_paths(os.path.join(gw.tmpdir, "access2.log")) if p.startswith(("/a/", "/c/"))}
        check_eq(new_paths, {f"/a/{i}" for i in range(10)} | {"/c/0"}, "sessions the new process logged")
        # Informational: the old process's workers may accept B's queue as
        # they resume, or the hand-off empties it (which one wins is a race).
        emptied = sum(int(n) for n in re.findall(r"dropped by the new process: (\d+) queued", gw.error_log()))
        return (f"10 queued on A served by the new process, 10 queued on the dropped B by the old one "
                f"({emptied} of them by the hand-off's queue emptying), 0 reset")


if __name__ == "__main__":
    main()
