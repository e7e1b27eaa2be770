"""Processes of scripts/bench: start, pin, wait for, measure and stop them.
Only processes this script started are signalled, by PID (and start time,
so that a recycled PID is never signalled)."""

import os
import resource
import signal
import socket
import subprocess
import sys
import time

from bench_lib.settings import LOADGEN_AS_LIMIT, PIN

started = []        # every Popen this script started, for the exit handler
started_extra = []  # PIDs our processes forked (nginx workers), signalled by PID at exit


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def pinned(cpu, argv):
    return ["taskset", "-c", cpu] + argv if PIN else argv


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def start_time(pid):
    """Field 22 of /proc/PID/stat (start time in ticks), None if gone: with the
    PID it identifies a process, so a recycled PID is never signalled."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2:].split()[19])


def kill_forked(pid, started_at):
    if started_at is not None and start_time(pid) == started_at:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def children(pid):
    """PIDs whose parent is <pid> (nginx workers of a master we started)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def spawn(argv, stdout=subprocess.DEVNULL, stderr=None):
    proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, start_new_session=True)
    started.append(proc)
    return proc


def stop(proc, extra_pids=()):
    """SIGTERM <proc>, bounded wait, SIGKILL; then SIGKILL what it forked
    (<extra_pids>: (pid, start time)) if still there."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid, started_at in extra_pids:
        kill_forked(pid, started_at)


def cleanup():
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for pid, started_at in started_extra:
        kill_forked(pid, started_at)


def version(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=5)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def limit_loadgen():
    resource.setrlimit(resource.RLIMIT_AS, (LOADGEN_AS_LIMIT, LOADGEN_AS_LIMIT))


def tree_cpu_s(pid):
    """CPU seconds of <pid> (all its threads), of its children it reaped
    (cutime, cstime: nginx and HAProxy workers retired by a reload) and of
    its live children; None when <pid> is gone."""
    def times(p, fields):
        with open(f"/proc/{p}/stat") as f:
            stat = f.read()
        return sum(int(x) for x in stat[stat.rfind(")") + 2:].split()[11:11 + fields])
    try:
        total = times(pid, 4)
    except OSError:
        return None
    for child in children(pid):
        try:
            total += times(child, 2)
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def read_line(stream, seconds):
    """One line from <stream> within <seconds>, else ""."""
    import select
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            return stream.readline()
    return ""

