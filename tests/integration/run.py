"""Runs the integration tests: every tests/integration/[0-9][0-9]_*.py.

Usage (from anywhere; test files run with the repository root as cwd):
    WSGATE_BUILD=build /usr/bin/python3 tests/integration/run.py [FILTER]

FILTER keeps the files whose name contains it. Each file runs as its own
process group with /usr/bin/python3 and a time limit (300 s; a file past it
gets SIGTERM, 3 s later SIGKILL, and counts as one failure). Its output is
printed as it arrives; `PASS ` and `FAIL ` lines are counted, and a file
that exits non-zero without a FAIL line counts as one failure. The last line
is `integration: N passed, N failed`; the exit status is non-zero when
anything failed or no test passed.
"""

import glob
import os
import select
import signal
import subprocess
import sys
import time

PYTHON = "/usr/bin/python3"
FILE_TIMEOUT = 300.0
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def kill_group(proc):
    """SIGTERM the file's process group (the harness then cleans up its own
    children), SIGKILL it if still there after 3 s."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass


def run_file(path, env):
    """Runs one test file; returns (passed, failed)."""
    name = os.path.basename(path)
    print(f"== {name}", flush=True)
    proc = subprocess.Popen([PYTHON, "-u", path], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    fd = proc.stdout.fileno()
    passed = failed = 0
    pending = b""
    deadline = time.monotonic() + FILE_TIMEOUT
    timed_out = False

    def take(line):
        nonlocal passed, failed
        text = line.decode("utf-8", "replace")
        print(text, flush=True)
        if text.startswith("PASS "):
            passed += 1
        elif text.startswith("FAIL "):
            failed += 1

    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        if not select.select([fd], [], [], min(left, 1.0))[0]:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            take(line)
    if pending:
        take(pending)
    if timed_out:
        kill_group(proc)
        print(f"FAIL {name}: timed out after {FILE_TIMEOUT:.0f}s (process group killed)",
              flush=True)
        return passed, failed + 1
    try:
        rc = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        rc = proc.returncode
    proc.stdout.close()
    if rc != 0 and failed == 0:
        print(f"FAIL {name}: exited with status {rc} without a FAIL line", flush=True)
        failed += 1
    return passed, failed


def main():
    patterns = sys.argv[1:] or [""]
    pattern = " ".join(patterns)
    files = [f for f in sorted(glob.glob(os.path.join(HERE, "[0-9][0-9]_*.py")))
             if any(p in os.path.basename(f) for p in patterns)]
    env = dict(os.environ)
    env["WSGATE_BUILD"] = os.path.abspath(os.path.join(ROOT, env.get("WSGATE_BUILD", "build")))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    passed = failed = 0
    took = []
    for path in files:
        start = time.monotonic()
        p, f = run_file(path, env)
        took.append((time.monotonic() - start, os.path.basename(path)))
        passed += p
        failed += f
    # The slowest files first: where the CI budget goes.
    print("integration timings: " + ", ".join(f"{name} {secs:.0f}s" for secs, name in
                                              sorted(took, reverse=True)), flush=True)
    if not files:
        print(f"no test file matches {pattern!r}", flush=True)
    print(f"integration: {passed} passed, {failed} failed", flush=True)
    sys.exit(0 if failed == 0 and passed > 0 else 1)


if __name__ == "__main__":
    main()
