"""The targets of scripts/bench and their configuration writers: one class
per proxy (direct, wsgate, nginx, HAProxy, the floor relay), each writing an
equivalent configuration for the scenario it runs, and the throwaway TLS
certificate they share."""

import os
import signal
import subprocess
import sys
import time

from bench_lib.procs import children, free_port, pinned, spawn, start_time, started_extra, stop, wait_port
from bench_lib.settings import (BUILD, CERT, PROXY_CPU, SCENARIOS, STORM_DRAIN, WORKERS, is_resume, is_tls,
                                uses_h2_loadgen)


def make_certificate(tmp_root):
    """A throwaway self-signed ECDSA P-256 certificate for "localhost", made
    with the openssl CLI; one file per part plus both in one (HAProxy's crt)."""
    cert, key, pem = (os.path.join(tmp_root, n) for n in ("cert.pem", "key.pem", "both.pem"))
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("bench: openssl could not make the TLS certificate: " + r.stderr.strip()[-400:])
    with open(pem, "w") as out:
        for part in (cert, key):
            with open(part) as f:
                out.write(f.read())
    CERT.update(cert=cert, key=key, pem=pem)


class Target:
    """A running proxy (or nothing, for direct) in front of the back end on <echo_port>."""
    name = ""

    def __init__(self, tmp, echo_port, echo_proc, scenario):
        self.tmp, self.echo_port, self.echo_proc, self.scenario = tmp, echo_port, echo_proc, scenario
        self.proc = None
        self.extra = []
        self.backends = [echo_port]  # run_storm: two, then one after reload()
        self.storm = SCENARIOS[scenario]["kind"] == "storm"

    def reload(self, backends):
        """Storm: the same listener with only <backends>, by the proxy's own reload."""
        raise NotImplementedError

    def start(self):
        """Returns (port, PIDs whose CPU and RSS are measured) or raises RuntimeError."""
        raise NotImplementedError

    def stop(self):
        """Stops the proxy and what it forked (nginx workers, HAProxy's
        master-worker children), including workers a reload started."""
        if self.proc:
            now = [(pid, start_time(pid)) for pid in children(self.proc.pid)]
            self.extra = self.extra + [e for e in now if e not in self.extra]
            started_extra.extend(now)
            stop(self.proc, self.extra)

    def _launch(self, argv, what):
        port = self.port
        self.proc = spawn(pinned(PROXY_CPU, argv), stderr=open(os.path.join(self.tmp, f"{what}.stderr"), "w"))
        if not wait_port(port, self.proc):
            self.stop()
            with open(os.path.join(self.tmp, f"{what}.stderr")) as f:
                tail = f.read()[-400:]
            raise RuntimeError(f"{what} did not start listening on 127.0.0.1:{port}: {tail.strip()}")


class Direct(Target):
    name = "direct"

    def start(self):
        return self.echo_port, [self.echo_proc.pid]


class Wsgate(Target):
    name = "wsgate"
    io = "epoll"  # [server] io

    def start(self):
        self.port = free_port()
        conf = self._write_config()
        check = subprocess.run([f"{BUILD}/wsgate", "-t", "-c", conf], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError("wsgate -t rejected the benchmark configuration: "
                               + (check.stdout + check.stderr).strip()[-400:])
        self._launch([f"{BUILD}/wsgate", "-c", conf], "wsgate")
        return self.port, [self.proc.pid]

    def reload(self, backends):
        self.backends = backends
        self._write_config()
        self.proc.send_signal(signal.SIGHUP)

    def _write_config(self):
        heartbeat = "10s" if self.scenario == "f" else "0s"
        drain = f"{STORM_DRAIN}s" if self.storm else "1s"
        pool_backends = "".join(f'\n[[pool.backend]]\naddress = "127.0.0.1:{p}"\n' for p in self.backends)
        tls = (f'[listener.tls]\ncert = "{CERT["cert"]}"\nkey = "{CERT["key"]}"\nmin_version = "1.2"\n'
               if is_tls(self.scenario) else "")
        if uses_h2_loadgen(self.scenario):
            # The default on a TLS listener, spelled out: ALPN offers h2
            # then http/1.1, and SETTINGS allow extended CONNECT.
            tls = "http2 = true\n" + tls
        conf = os.path.join(self.tmp, "wsgate.toml")
        with open(conf, "w") as f:
            f.write(f"""[server]
workers = {WORKERS}
io = "{self.io}"
max_connections = 100000
drain_timeout = "{drain}"

[log]
access = ""
error = "{self.tmp}/wsgate-error.log"
level = "warn"

[[listener]]
listen = "127.0.0.1:{self.port}"
{tls}
[timeouts]
handshake = "10s"
connect = "5s"
idle = "1h"

[heartbeat]
interval = "{heartbeat}"
timeout = "10s"
peers = "client"

[[route]]
path_prefix = "/"
pool = "main"

[[pool]]
name = "main"
hash = "{'query:k' if self.storm else 'ip'}"
algorithm = "ring"
{pool_backends}""")
        return conf


class WsgateUring(Wsgate):
    """wsgate with [server] io = "io_uring": the tunnels' plain sockets (the
    back end side, and the client side when it speaks no TLS) go through one
    io_uring per worker. wsgate falls back to epoll with a warning when the
    ring cannot be set up, so start() checks that every worker holds one."""
    name = "wsgate-uring"
    io = "io_uring"

    def start(self):
        port, pids = super().start()
        # Each worker thread sets its ring up as it starts, which may be
        # after the listener accepts.
        deadline = time.monotonic() + 3
        while (rings := io_uring_fds(self.proc.pid)) < WORKERS and time.monotonic() < deadline:
            time.sleep(0.02)
        if rings < WORKERS:
            try:
                with open(os.path.join(self.tmp, "wsgate-error.log")) as f:
                    why = " ".join(line.strip() for line in f if "io_uring" in line)[-300:]
            except OSError:
                why = ""
            self.stop()
            raise RuntimeError(f"{NO_IO_URING}: {rings} io_uring file(s) in /proc/{self.proc.pid}/fd for "
                               f"{WORKERS} worker(s), it fell back to epoll; {why or 'no warning logged'}")
        return port, pids


# How a wsgate-uring run that did not get its rings fails (scripts/bench looks for it).
NO_IO_URING = "wsgate-uring runs without io_uring"


def io_uring_fds(pid):
    """How many io_uring instances <pid> holds open (anon_inode:[io_uring] in /proc/PID/fd)."""
    count = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[io_uring]"
        except OSError:
            pass
    return count


class Nginx(Target):
    name = "nginx"

    def start(self):
        self.port = free_port()
        d = self.tmp
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(f"{d}/nginx-tmp/{sub}", exist_ok=True)
        conf = self._write_config()
        self._launch(["nginx", "-p", d + "/", "-e", f"{d}/nginx-error.log", "-c", conf], "nginx")
        deadline = time.monotonic() + 5
        while len(self.extra) < WORKERS and time.monotonic() < deadline:
            self.extra = children(self.proc.pid)
            time.sleep(0.02)
        self.extra = [(pid, start_time(pid)) for pid in self.extra]
        started_extra.extend(self.extra)
        if not self.extra:
            raise RuntimeError("nginx started no worker process")
        return self.port, [self.proc.pid] + [pid for pid, _ in self.extra]

    def reload(self, backends):
        """SIGHUP: new workers take new connections; the old ones keep their
        sessions until those close (no worker_shutdown_timeout)."""
        self.backends = backends
        self._write_config()
        self.proc.send_signal(signal.SIGHUP)

    def _write_config(self):
        d = self.tmp
        conf = os.path.join(d, "nginx.conf")
        tls = (f"ssl;\n        ssl_certificate {CERT['cert']};\n        ssl_certificate_key {CERT['key']};\n"
               "        ssl_protocols TLSv1.2 TLSv1.3;\n" if is_tls(self.scenario) else ";")
        if is_tls(self.scenario) and is_resume(self.scenario):
            # Tickets are on by default; the session-ID cache is not.
            tls += "        ssl_session_cache shared:SSL:10m;\n        ssl_session_timeout 5m;\n"
        servers = "".join(f"        server 127.0.0.1:{p};\n" for p in self.backends)
        if self.storm:
            servers = "        hash $arg_k consistent;\n" + servers
        with open(conf, "w") as f:
            f.write(f"""# WORKERS worker processes (1: the proxy under test is pinned to one core).
worker_processes {WORKERS};
worker_rlimit_nofile 20000;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;

# Connection slots above the 20,000-file cap, so that only the cap bounds the
# idle-session count: with worker_connections 20000 nginx began "reusing
# connections" (closing sessions) at about 9,380 sessions.
events {{
    worker_connections 40000;
}}

http {{
    access_log off;
    client_body_temp_path {d}/nginx-tmp/body;
    proxy_temp_path {d}/nginx-tmp/proxy;
    fastcgi_temp_path {d}/nginx-tmp/fastcgi;
    uwsgi_temp_path {d}/nginx-tmp/uwsgi;
    scgi_temp_path {d}/nginx-tmp/scgi;

    upstream backend {{
{servers}    }}

    server {{
        listen 127.0.0.1:{self.port} {tls}
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_connect_timeout 5s;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
""")
        return conf


class Haproxy(Target):
    name = "haproxy"

    def start(self):
        self.port = free_port()
        conf = self._write_config()
        # Storm: master-worker mode, so that SIGUSR2 reloads (a new worker;
        # the old one keeps its sessions until they close).
        self._launch(["haproxy"] + (["-W"] if self.storm else []) + ["-db", "-f", conf], "haproxy")
        return self.port, [self.proc.pid]

    def reload(self, backends):
        self.backends = backends
        self._write_config()
        self.proc.send_signal(signal.SIGUSR2)

    def _write_config(self):
        conf = os.path.join(self.tmp, "haproxy.cfg")
        tls = f" ssl crt {CERT['pem']} ssl-min-ver TLSv1.2" if is_tls(self.scenario) else ""
        if uses_h2_loadgen(self.scenario):
            # h2 beside HTTP/1.1 by ALPN (HAProxy's default offers only
            # http/1.1): RFC 8441 on the front end since 2.4, SETTINGS with
            # ENABLE_CONNECT_PROTOCOL by default. HTX, which it needs, is the
            # only HTTP engine since 2.1 ("option http-use-htx" is gone).
            tls += " alpn h2,http/1.1"
        servers = "".join(f"    server echo{p} 127.0.0.1:{p}\n" for p in self.backends)
        # 9,990 connections need 2 x 9,990 + 25 files: at the 20,000 cap, the
        # master of master-worker mode (storm) needs 10 connections less.
        maxconn = 9980 if self.storm else 9990
        if self.storm:
            servers = "    balance url_param k\n    hash-type consistent\n" + servers
        with open(conf, "w") as f:
            f.write(f"""# WORKERS threads (1: the proxy under test is pinned to one core). No log lines.
global
    nbthread {WORKERS}
    maxconn {maxconn}

defaults
    mode http
    maxconn {maxconn}
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout http-request 10s

frontend fe
    bind 127.0.0.1:{self.port}{tls}
    default_backend be

backend be
{servers}""")
        return conf


class Floor(Target):
    """tests/bench/tcp_relay_floor: a blind plain-epoll relay, no parsing; the
    cheapest user-space proxy, as a floor for the CPU columns."""
    name = "floor"

    def start(self):
        self.port = free_port()
        self._launch([f"{BUILD}/tcp_relay_floor", "--port", str(self.port), "--backend-port", str(self.echo_port)],
                     "floor")
        return self.port, [self.proc.pid]


TARGET_CLASSES = {c.name: c for c in (Direct, Wsgate, WsgateUring, Nginx, Haproxy, Floor)}
WSGATE_TARGETS = (Wsgate.name, WsgateUring.name)
