#!/usr/bin/python3
"""Packaging: `make deb` and `make install` around the binary under test.

Builds the package from `$WSGATE_BUILD/wsgate` as it is (`make -o` keeps make
from rebuilding it) into a temp dir, extracts it with `dpkg-deb -x` / `-e`
and checks the files, their modes, the control fields, conffiles and
md5sums; runs the extracted binary on the packaged config (`-t`, then for
real with its addresses moved to free loopback ports) including a logrotate
style rotation (rename, SIGUSR1, new files); verifies the unit with
systemd-analyze and the man pages with groff when those tools exist; and
checks that `make install DESTDIR=... PREFIX=...` lays out the same files.
"""
import gzip
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("WSGATE_BUILD", "build")
BINARY = os.path.join(BUILD, "wsgate")
MAKE_TIMEOUT_S = 120
WAIT_S = 10

# Regular files of the package (paths relative to /) and their modes.
EXPECTED_FILES = {
    "usr/sbin/wsgate": 0o755,
    "etc/wsgate/wsgate.toml": 0o644,
    "lib/systemd/system/wsgate.service": 0o644,
    "etc/logrotate.d/wsgate": 0o644,
    "usr/share/man/man8/wsgate.8.gz": 0o644,
    "usr/share/man/man5/wsgate.toml.5.gz": 0o644,
}

failures = 0
started = []  # Popen objects of the wsgate processes this file started


def report_pass(name):
    print(f"PASS {name}", flush=True)


def report_fail(name, why):
    global failures
    failures += 1
    print(f"FAIL {name}: {why}", flush=True)


def check(name, problems):
    """PASS when <problems> (a list of strings) is empty, else one FAIL."""
    if problems:
        report_fail(name, "; ".join(problems))
    else:
        report_pass(name)


def run(argv, timeout=30, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)


def make_env():
    """The environment for a nested make: without the jobserver of a `make
    check` that may have started this file (its descriptors are not passed)."""
    env = dict(os.environ)
    for key in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(key, None)
    return env


def make(*args):
    """make with the binary under test taken as it is (-o: never rebuilt)."""
    return run(["make", "--no-print-directory", "-o", BINARY, f"BUILD={BUILD}", *args],
               timeout=MAKE_TIMEOUT_S, cwd=ROOT, env=make_env())


def files_under(root):
    """{relative path: mode} of the regular files and symlinks under <root>."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = os.lstat(path).st_mode & 0o7777
    return out


def free_ports(count):
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_for(predicate, seconds=WAIT_S):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def unit_directives(text):
    """{key: [values]} of a systemd unit file (sections merged)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def plain_request(port):
    """Sends a GET without an upgrade (wsgate proxies it; with no back end
    running it answers 502 and logs the request); returns the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: packaging.test\r\n\r\n")
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


def line_count(path):
    return len([line for line in read_text(path).splitlines() if line.strip()])


def test_build(tmp, version, arch):
    """`make deb`; returns the package path or None."""
    debdir = os.path.join(tmp, "deb")
    result = make("deb", f"DEBDIR={debdir}")
    deb = os.path.join(debdir, f"wsgate_{version}_{arch}.deb")
    if result.returncode != 0:
        report_fail("make_deb", f"exit {result.returncode}: {result.stderr.strip()[-400:]}")
        return None
    if not os.path.isfile(deb):
        report_fail("make_deb", f"{deb} missing; in {debdir}: {sorted(os.listdir(debdir))}")
        return None
    report_pass("make_deb")
    return deb


def test_contents(deb, extracted):
    listing = run(["dpkg-deb", "-c", deb]).stdout
    problems = []
    owners = {line.split()[1] for line in listing.splitlines() if line.strip()}
    if owners != {"root/root"}:
        problems.append(f"owners {sorted(owners)}, expected root/root only")
    files = files_under(extracted)
    if set(files) != set(EXPECTED_FILES):
        problems.append(f"files {sorted(files)}, expected {sorted(EXPECTED_FILES)}")
    for path, mode in EXPECTED_FILES.items():
        if path in files and files[path] != mode:
            problems.append(f"{path} mode {oct(files[path])}, expected {oct(mode)}")
    binary = os.path.join(extracted, "usr/sbin/wsgate")
    if os.path.isfile(binary):
        with open(binary, "rb") as f:
            if f.read(4) != b"\x7fELF":
                problems.append("usr/sbin/wsgate is not an ELF file")
    for page, header in (("usr/share/man/man8/wsgate.8.gz", ".TH WSGATE 8"),
                         ("usr/share/man/man5/wsgate.toml.5.gz", ".TH WSGATE.TOML 5")):
        try:
            with gzip.open(os.path.join(extracted, page), "rt") as f:
                if not f.read().startswith(header):
                    problems.append(f"{page} does not start with {header!r}")
        except OSError as e:
            problems.append(f"{page}: {e}")
    check("deb_contents", problems)


def test_control(control_dir, version, arch):
    fields = {}
    current = None
    for line in read_text(os.path.join(control_dir, "control")).splitlines():
        if line.startswith((" ", "\t")) and current:
            fields[current] += "\n" + line
        elif ":" in line:
            current, value = line.split(":", 1)
            fields[current] = value.strip()
    problems = []
    for key, want in (("Package", "wsgate"), ("Version", version), ("Architecture", arch)):
        if fields.get(key) != want:
            problems.append(f"{key} is {fields.get(key)!r}, expected {want!r}")
    for key in ("Maintainer", "Description", "Installed-Size"):
        if not fields.get(key):
            problems.append(f"no {key}")
    if not fields.get("Installed-Size", "").isdigit():
        problems.append(f"Installed-Size {fields.get('Installed-Size')!r} is not a number")
    depends = {re.split(r"[ (]", d.strip())[0] for d in fields.get("Depends", "").split(",") if d.strip()}
    for needed in ("adduser", "libc6", "libstdc++6", "libssl3", "libevent-core-2.1-7", "libfmt9",
                   "libtomlplusplus3", "libxxhash0", "libc-ares2", "liburing2"):
        if needed not in depends:
            problems.append(f"Depends lacks {needed} (has {sorted(depends)})")
    check("deb_control_fields", problems)

    conffiles = read_text(os.path.join(control_dir, "conffiles")).split()
    check("deb_conffiles", [] if conffiles == ["/etc/wsgate/wsgate.toml"]
          else [f"conffiles {conffiles}, expected ['/etc/wsgate/wsgate.toml']"])

    problems = []
    for script in ("postinst", "prerm", "postrm"):
        path = os.path.join(control_dir, script)
        if not os.access(path, os.X_OK):
            problems.append(f"{script} missing or not executable")
            continue
        syntax = run(["sh", "-n", path])
        if syntax.returncode != 0:
            problems.append(f"{script}: sh -n: {syntax.stderr.strip()}")
    postinst = read_text(os.path.join(control_dir, "postinst"))
    if "adduser --system" not in postinst or "/var/log/wsgate" not in postinst:
        problems.append("postinst does not create the wsgate system user and /var/log/wsgate")
    check("deb_maintainer_scripts", problems)


def test_md5sums(control_dir, extracted):
    problems = []
    listed = set()
    for line in read_text(os.path.join(control_dir, "md5sums")).splitlines():
        digest, path = line.split(None, 1)
        listed.add(path)
        try:
            with open(os.path.join(extracted, path), "rb") as f:
                if hashlib.md5(f.read()).hexdigest() != digest:
                    problems.append(f"{path}: md5 mismatch")
        except OSError as e:
            problems.append(f"{path}: {e}")
    if listed != set(EXPECTED_FILES):
        problems.append(f"md5sums lists {sorted(listed)}")
    check("deb_md5sums", problems)


def test_binary(extracted, version):
    binary = os.path.join(extracted, "usr/sbin/wsgate")
    config = os.path.join(extracted, "etc/wsgate/wsgate.toml")
    result = run([binary, "-t", "-c", config])
    problems = []
    if result.returncode != 0 or "is valid" not in result.stdout:
        problems.append(f"exit {result.returncode}, stdout {result.stdout.strip()!r}, "
                        f"stderr {result.stderr.strip()[-300:]!r}")
    check("packaged_config_passes_t", problems)

    problems = []
    with open(config, "rb") as f:
        settings = tomllib.load(f)
    want = {
        ("log", "access"): "/var/log/wsgate/access.log",
        ("log", "error"): "/var/log/wsgate/error.log",
        ("admin", "listen"): "127.0.0.1:9090",
    }
    for (section, key), value in want.items():
        if settings.get(section, {}).get(key) != value:
            problems.append(f"{section}.{key} = {settings.get(section, {}).get(key)!r}, expected {value!r}")
    listeners = [item.get("listen") for item in settings.get("listener", [])]
    if listeners != ["0.0.0.0:8080"]:
        problems.append(f"listeners {listeners}, expected ['0.0.0.0:8080']")
    check("packaged_config_production_paths", problems)

    result = run([binary, "--version"])
    check("packaged_binary_version", [] if result.stdout.strip() == f"wsgate {version}"
          else [f"--version printed {result.stdout.strip()!r}, expected 'wsgate {version}'"])


def test_log_rotation(tmp, extracted):
    """The packaged config, its addresses and log paths moved into <tmp>, run
    by the packaged binary under a $NOTIFY_SOCKET as the Type=notify unit
    runs it: logs rotated as logrotate does (rename, SIGUSR1) continue in new
    files; SIGHUP reloads; SIGTERM stops it with status 0."""
    name = "packaged_config_runs_and_reopens_logs_on_usr1"
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    listen_port, admin_port, backend_port = free_ports(3)
    text = read_text(os.path.join(extracted, "etc/wsgate/wsgate.toml"))
    replacements = {
        '"/var/log/wsgate/access.log"': f'"{logs}/access.log"',
        '"/var/log/wsgate/error.log"': f'"{logs}/error.log"',
        '"0.0.0.0:8080"': f'"127.0.0.1:{listen_port}"',
        '"127.0.0.1:9090"': f'"127.0.0.1:{admin_port}"',
        '"127.0.0.1:9001"': f'"127.0.0.1:{backend_port}"',
    }
    for old, new in replacements.items():
        if old not in text:
            report_fail(name, f"packaged config has no {old}")
            return
        text = text.replace(old, new)
    text = re.sub(r"(?m)^workers = .*$", "workers = 1", text)
    text = re.sub(r'(?m)^drain_timeout = .*$', 'drain_timeout = "2s"', text)
    config = os.path.join(tmp, "run.toml")
    with open(config, "w") as f:
        f.write(text)

    with NotifySocket(os.path.join(tmp, "notify.sock")) as notify:
        env = dict(os.environ, NOTIFY_SOCKET=notify.path)
        with open(os.path.join(tmp, "stderr.txt"), "w") as stderr:
            proc = subprocess.Popen([os.path.join(extracted, "usr/sbin/wsgate"), "-c", config],
                                    stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        started.append(proc)
        run_packaged_config(name, tmp, extracted, logs, proc, listen_port, notify)


class NotifySocket:
    """The datagram socket of systemd's notify protocol (sd_notify(3)), as
    Type=notify gives a service in $NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.messages = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()

    def wait(self, token, after=0):
        """Index of the first message from index <after> on with the line
        <token>, waiting up to WAIT_S for it; None if it never came."""
        deadline = time.monotonic() + WAIT_S
        while True:
            for i in range(after, len(self.messages)):
                if token in self.messages[i].splitlines():
                    return i
            if time.monotonic() >= deadline:
                return None
            try:
                self.messages.append(self.sock.recv(4096).decode(errors="replace"))
            except socket.timeout:
                pass


def run_packaged_config(name, tmp, extracted, logs, proc, listen_port, notify):
    access, error = os.path.join(logs, "access.log"), os.path.join(logs, "error.log")
    if not wait_for(lambda: "ready" in read_text(error) or proc.poll() is not None) or proc.poll() is not None:
        report_fail(name, f"not ready (exit {proc.poll()}): {read_text(error)[-300:]!r}")
        return
    # Type=notify: READY=1 at start, RELOADING=1 (with MONOTONIC_USEC) then
    # READY=1 around a SIGHUP, STOPPING=1 when a SIGTERM begins the drain.
    notify_problems = []
    ready = notify.wait("READY=1")
    if ready is None:
        notify_problems.append(f"no READY=1 after start (got {notify.messages})")
    status = plain_request(listen_port)
    if " 502 " not in status + " ":
        report_fail(name, f"plain GET answered {status!r}, expected 502 (no back end runs)")
        return
    if not wait_for(lambda: line_count(access) == 1):
        report_fail(name, f"access log has {line_count(access)} lines after one request, expected 1")
        return

    os.rename(access, access + ".1")
    os.rename(error, error + ".1")
    proc.send_signal(signal.SIGUSR1)
    if not wait_for(lambda: os.path.exists(access) and os.path.exists(error)):
        report_fail(name, f"no new logs after SIGUSR1: {sorted(os.listdir(logs))}")
        return
    plain_request(listen_port)
    if not wait_for(lambda: line_count(access) == 1):
        report_fail(name, f"new access log has {line_count(access)} lines after one request, expected 1")
        return
    if line_count(access + ".1") != 1:
        report_fail(name, f"rotated access log has {line_count(access + '.1')} lines, expected 1")
        return

    if shutil.which("logrotate"):
        test_logrotate_run(tmp, extracted, logs, proc, listen_port)

    after = len(notify.messages)
    proc.send_signal(signal.SIGHUP)
    reloading = notify.wait("RELOADING=1", after)
    if reloading is None:
        notify_problems.append(f"no RELOADING=1 after SIGHUP (got {notify.messages[after:]})")
    else:
        if not any(line.startswith("MONOTONIC_USEC=") for line in notify.messages[reloading].splitlines()):
            notify_problems.append(f"RELOADING=1 without MONOTONIC_USEC: {notify.messages[reloading]!r}")
        if notify.wait("READY=1", reloading + 1) is None:
            notify_problems.append(f"no READY=1 after the reload (got {notify.messages[after:]})")

    after = len(notify.messages)
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        report_fail(name, f"still running {WAIT_S} s after SIGTERM")
        return
    if code != 0:
        report_fail(name, f"exit {code} after SIGTERM")
        return
    if "stopped" not in read_text(error):
        report_fail(name, f"the new error log does not end with the stop: {read_text(error)[-300:]!r}")
        return
    report_pass(name)
    if notify.wait("STOPPING=1", after) is None:
        notify_problems.append(f"no STOPPING=1 after SIGTERM (got {notify.messages[after:]})")
    check("unit_type_notify_protocol", notify_problems)


def test_logrotate_run(tmp, extracted, logs, proc, listen_port):
    """logrotate -f with the packaged file, its glob moved to <logs> and its
    postrotate signalling only <proc>: the logs are renamed (the previous
    generation compressed) and wsgate continues in new files."""
    name = "logrotate_packaged_file_rotates_and_wsgate_reopens"
    text = read_text(os.path.join(extracted, "etc/logrotate.d/wsgate"))
    head, _, rest = text.partition("postrotate")
    _, _, tail = rest.partition("endscript")
    conf = os.path.join(tmp, "logrotate.conf")
    with open(conf, "w") as f:
        f.write(head.replace("/var/log/wsgate/", logs + "/") +
                f"postrotate\n\t\tkill -USR1 {proc.pid}\n\tendscript" + tail)
    os.chmod(conf, 0o644)
    access = os.path.join(logs, "access.log")
    result = run(["logrotate", "-f", "-s", os.path.join(tmp, "logrotate.state"), conf])
    problems = []
    if result.returncode != 0:
        problems.append(f"logrotate exit {result.returncode}: {result.stderr.strip()[-300:]}")
    elif not wait_for(lambda: os.path.exists(access)):
        problems.append(f"no new access.log after the postrotate SIGUSR1: {sorted(os.listdir(logs))}")
    else:
        plain_request(listen_port)
        if not wait_for(lambda: line_count(access) == 1):
            problems.append(f"new access log has {line_count(access)} lines after one request")
        for rotated in ("access.log.1", "access.log.2.gz"):
            if not os.path.exists(os.path.join(logs, rotated)):
                problems.append(f"no {rotated} in {sorted(os.listdir(logs))}")
        if line_count(access + ".1") != 1:
            problems.append(f"access.log.1 has {line_count(access + '.1')} lines, expected 1")
    check(name, problems)


def test_unit(tmp, extracted):
    unit_path = os.path.join(extracted, "lib/systemd/system/wsgate.service")
    text = read_text(unit_path)
    d = unit_directives(text)
    problems = []
    expect = {
        "Type": "notify", "User": "wsgate", "Group": "wsgate",
        "ExecStart": "/usr/sbin/wsgate -c /etc/wsgate/wsgate.toml",
        "ExecStartPre": "/usr/sbin/wsgate -t -c /etc/wsgate/wsgate.toml",
        "ExecReload": "/bin/kill -HUP $MAINPID", "KillSignal": "SIGTERM",
        "LimitNOFILE": "1048576", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "LogsDirectory": "wsgate", "Restart": "on-failure",
    }
    for key, value in expect.items():
        if d.get(key) != [value]:
            problems.append(f"{key}={d.get(key)}, expected {value!r}")
    stop = d.get("TimeoutStopSec", ["0"])[0].rstrip("s")
    if not stop.isdigit() or int(stop) <= 30:
        problems.append(f"TimeoutStopSec={d.get('TimeoutStopSec')} is not above the 30s default drain")
    check("unit_directives", problems)

    # Verified with its executables pointing into the extracted tree; any
    # warning (unknown key, bad value, missing binary) fails.
    if shutil.which("systemd-analyze"):
        local = os.path.join(tmp, "wsgate.service")
        with open(local, "w") as f:
            f.write(text.replace("/usr/sbin/wsgate", os.path.join(extracted, "usr/sbin/wsgate")))
        result = run(["systemd-analyze", "verify", "--man=no", local])
        output = (result.stdout + result.stderr).strip()
        check("unit_systemd_analyze_verify", [] if result.returncode == 0 and not output
              else [f"exit {result.returncode}: {output[-400:]}"])


def test_logrotate(extracted):
    text = read_text(os.path.join(extracted, "etc/logrotate.d/wsgate"))
    problems = []
    if "/var/log/wsgate/*.log" not in text:
        problems.append("does not rotate /var/log/wsgate/*.log")
    if "copytruncate" in text:
        problems.append("uses copytruncate (lines written during the copy are lost)")
    postrotate = text.split("postrotate", 1)[-1].split("endscript", 1)[0]
    if "USR1" not in postrotate:
        problems.append("postrotate does not send SIGUSR1")
    syntax = run(["sh", "-n", "-c", postrotate])
    if syntax.returncode != 0:
        problems.append(f"postrotate script: {syntax.stderr.strip()}")
    check("logrotate_file", problems)


def man_source(extracted, page):
    with gzip.open(os.path.join(extracted, page), "rt") as f:
        return f.read()


def test_man(tmp, extracted, version):
    binary = os.path.join(extracted, "usr/sbin/wsgate")
    if shutil.which("groff"):
        problems = []
        for page in ("usr/share/man/man8/wsgate.8.gz", "usr/share/man/man5/wsgate.toml.5.gz"):
            result = run(["groff", "-man", "-Tutf8", "-ww"], input=man_source(extracted, page))
            if result.returncode != 0 or result.stderr.strip():
                problems.append(f"{page}: {result.stderr.strip()[-300:]}")
            elif f"wsgate {version}" not in result.stdout:
                problems.append(f"{page} does not name version {version}")
        check("man_pages_render_without_warnings", problems)

    # The option list of wsgate(8) is the one of `wsgate --help`.
    page8 = man_source(extracted, "usr/share/man/man8/wsgate.8.gz")
    usage = run([binary, "--help"]).stdout
    problems = []
    for option in re.findall(r"(--[a-z]+)", usage):
        if option.replace("-", "\\-") not in page8:
            problems.append(f"wsgate.8 does not document {option}")
    for signal_name in ("SIGHUP", "SIGTERM", "SIGINT", "SIGUSR1"):
        if signal_name not in page8:
            problems.append(f"wsgate.8 does not document {signal_name}")
    check("man8_documents_options_and_signals", problems)

    # The EXAMPLES of wsgate.toml(5) is a valid configuration.
    page5 = man_source(extracted, "usr/share/man/man5/wsgate.toml.5.gz")
    example = re.search(r"(?s)^\.SH EXAMPLES\n.*?^\.EX\n(.*?)^\.EE", page5, re.M)
    example_path = os.path.join(tmp, "man-example.toml")
    problems = []
    if example is None:
        problems.append("no .EX block under EXAMPLES")
    else:
        with open(example_path, "w") as f:
            f.write(example.group(1).replace("\\-", "-").replace("\\(dq", '"'))
        result = run([binary, "-t", "-c", example_path])
        if result.returncode != 0:
            problems.append(f"wsgate -t: {result.stderr.strip()[-300:]}")
    check("man5_example_is_valid", problems)

    # Every key of the packaged and reference configs and of the example has
    # its own entry (a .TP tag) in its section of wsgate.toml(5).
    sections = {}
    for chunk in re.split(r"(?m)^\.S[HS] ", page5)[1:]:
        title, _, body = chunk.partition("\n")
        sections[title.strip().strip("[]")] = body
    problems = []
    sources = [os.path.join(extracted, "etc/wsgate/wsgate.toml"), os.path.join(ROOT, "conf/wsgate.toml"),
               example_path]
    for source in filter(os.path.exists, sources):
        with open(source, "rb") as f:
            for section, key in config_keys(tomllib.load(f)):
                if not re.search(rf"(?m)^\.TP\n\.BR? {re.escape(key)}\b", sections.get(section, "")):
                    problems.append(f"{section}.{key} (from {os.path.basename(source)})")
    check("man5_documents_every_key", sorted(set(problems)))


def config_keys(table, section=""):
    """(section, key) of every leaf key of a parsed TOML file; the section of
    [[pool.backend]] is "pool.backend"."""
    out = []
    for key, value in table.items():
        inner = f"{section}.{key}" if section else key
        items = value if isinstance(value, list) and value and isinstance(value[0], dict) else [value]
        if isinstance(items[0], dict):
            for item in items:
                out.extend(config_keys(item, inner))
        else:
            out.append((section, key))
    return out


def test_install(tmp, extracted):
    """`make install` lays out what the package holds; never overwrites an
    existing config; PREFIX is carried into the unit and logrotate file."""
    dest = os.path.join(tmp, "install-usr")
    result = make("install", f"DESTDIR={dest}", "PREFIX=/usr")
    if result.returncode != 0:
        report_fail("make_install_matches_deb", f"exit {result.returncode}: {result.stderr.strip()[-300:]}")
        return
    installed, packaged = files_under(dest), files_under(extracted)
    problems = []
    if installed != packaged:
        problems.append(f"install {sorted(installed.items())} != deb {sorted(packaged.items())}")
    for path in EXPECTED_FILES:
        if path == "usr/sbin/wsgate":
            continue  # the package's copy is stripped
        with open(os.path.join(dest, path), "rb") as a, open(os.path.join(extracted, path), "rb") as b:
            if a.read() != b.read():
                problems.append(f"{path} differs from the package's")
    check("make_install_matches_deb", problems)

    config = os.path.join(dest, "etc/wsgate/wsgate.toml")
    with open(config, "a") as f:
        f.write("# edited by the operator\n")
    result = make("install", f"DESTDIR={dest}", "PREFIX=/usr")
    check("make_install_keeps_edited_config",
          [f"exit {result.returncode}"] if result.returncode != 0 else
          [] if read_text(config).endswith("# edited by the operator\n") else ["config overwritten"])

    dest = os.path.join(tmp, "install-local")
    result = make("install", f"DESTDIR={dest}", "PREFIX=/usr/local")
    problems = []
    if result.returncode != 0:
        problems.append(f"exit {result.returncode}: {result.stderr.strip()[-300:]}")
    else:
        files = set(files_under(dest))
        want = {p.replace("usr/", "usr/local/", 1) if p.startswith("usr/") else p for p in EXPECTED_FILES}
        if files != want:
            problems.append(f"files {sorted(files)}, expected {sorted(want)}")
        unit = unit_directives(read_text(os.path.join(dest, "lib/systemd/system/wsgate.service")))
        if unit.get("ExecStart") != ["/usr/local/sbin/wsgate -c /etc/wsgate/wsgate.toml"]:
            problems.append(f"ExecStart={unit.get('ExecStart')}")
        if "/usr/sbin/wsgate" in read_text(os.path.join(dest, "etc/logrotate.d/wsgate")):
            problems.append("logrotate file still names /usr/sbin/wsgate")
    check("make_install_prefix_usr_local", problems)


def main():
    if not os.access(os.path.join(ROOT, BINARY), os.X_OK):
        report_fail("make_deb", f"{BINARY} not built")
        return
    for tool in ("make", "dpkg-deb", "dpkg"):
        if not shutil.which(tool):
            report_fail("make_deb", f"{tool} not found")
            return
    with open(os.path.join(ROOT, "VERSION")) as f:
        version = f.read().strip()
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    tmp = tempfile.mkdtemp(prefix="wsgate-packaging-")
    try:
        deb = test_build(tmp, version, arch)
        if deb is None:
            return
        extracted, control_dir = os.path.join(tmp, "root"), os.path.join(tmp, "control")
        for flag, target in (("-x", extracted), ("-e", control_dir)):
            result = run(["dpkg-deb", flag, deb, target])
            if result.returncode != 0:
                report_fail("deb_extract", f"dpkg-deb {flag}: {result.stderr.strip()}")
                return
        test_contents(deb, extracted)
        test_control(control_dir, version, arch)
        test_md5sums(control_dir, extracted)
        test_binary(extracted, version)
        test_log_rotation(tmp, extracted)
        test_unit(tmp, extracted)
        test_logrotate(extracted)
        test_man(tmp, extracted, version)
        test_install(tmp, extracted)
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    os.chdir(ROOT)
    try:
        main()
    except Exception as e:  # an unexpected error is one failure, not a traceback only
        report_fail("packaging", f"{type(e).__name__}: {e}")
    sys.exit(1 if failures else 0)
