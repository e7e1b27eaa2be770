"""Edge-security helpers for the integration tests (55_tls, 56_auth,
57_client_addr): a throwaway PKI made with the openssl CLI, JSON Web Tokens
signed in the test (HS256 with hmac, RS256/ES256 with `openssl dgst`),
PROXY protocol v1/v2 headers, a TOML renderer for the nested tables the
security features need, and a TLS-speaking variant of the test back end.

Everything lives in the calling test's temporary directory; nothing here
talks to anything but 127.0.0.1.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import socket
import ssl
import struct
import subprocess

from harness import (HOST, OP_TEXT, Backend, FrameSocket, HarnessError,
                     accept_key, new_key, parse_head, read_head, upgrade_head)

OPENSSL = "openssl"


# --------------------------------------------------------------------------
# A throwaway PKI.

def openssl(*args, input=None, timeout=30):
    """Runs the openssl CLI; returns stdout bytes, raises HarnessError on failure."""
    proc = subprocess.run([OPENSSL, *args], input=input, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise HarnessError(f"openssl {' '.join(args[:3])} failed: "
                           f"{proc.stderr.decode('utf-8', 'replace')[-400:]}")
    return proc.stdout


class Ca:
    """A self-signed EC P-256 certificate authority in <directory>."""

    def __init__(self, directory, name="wsgate test CA"):
        self.dir = directory
        slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
        self.key = os.path.join(directory, slug + ".key")
        self.cert = os.path.join(directory, slug + ".pem")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "2",
                "-subj", f"/CN={name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, common_name, dns=(), ips=(), basename=None):
        """(cert path, key path) of a new leaf for <common_name> with
        subjectAltName DNS:<dns>... IP:<ips>..., signed by this CA."""
        base = os.path.join(self.dir, basename or re.sub(r"[^A-Za-z0-9.]+", "_", common_name))
        key, csr, cert, ext = base + ".key", base + ".csr", base + ".pem", base + ".ext"
        san = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth\n")
            if san:
                f.write("subjectAltName=" + ",".join(san) + "\n")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={common_name}")
        openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
                "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext)
        return cert, key


def client_context(ca_cert):
    """An ssl.SSLContext that trusts only <ca_cert> and checks host names."""
    ctx = ssl.create_default_context(cafile=ca_cert)
    ctx.check_hostname = True
    return ctx


def peer_common_name(port, server_name, ca_cert, timeout=5.0):
    """The subject CN of the certificate wsgate presents for SNI <server_name>
    (None: no SNI), fetched with Python's ssl (verification against <ca_cert>
    but no host-name check, so a wrong pick is reported, not refused)."""
    ctx = ssl.create_default_context(cafile=ca_cert)
    ctx.check_hostname = False
    with socket.create_connection((HOST, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            cert = s.getpeercert()
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def s_client_subject(port, server_name=None, extra=(), timeout=10):
    """(exit code, subject line or "", full output) of `openssl s_client`
    against 127.0.0.1:<port>, with -servername <server_name> when given."""
    argv = [OPENSSL, "s_client", "-connect", f"{HOST}:{port}"]
    if server_name:
        argv += ["-servername", server_name]
    argv += list(extra)
    proc = subprocess.run(argv, input=b"", capture_output=True, timeout=timeout)
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    m = re.search(r"^subject=(.*)$", out, re.M)
    return proc.returncode, (m.group(1).strip() if m else ""), out


# --------------------------------------------------------------------------
# JSON Web Tokens (RFC 7515 compact serialization, RFC 7518 algorithms).

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rsa_keypair(directory, name="rsa"):
    """(private PEM path, public PEM path) of a new 2048-bit RSA key."""
    private = os.path.join(directory, name + ".key")
    public = os.path.join(directory, name + ".pub.pem")
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", private)
    openssl("pkey", "-in", private, "-pubout", "-out", public)
    return private, public


def ec_keypair(directory, name="ec"):
    """(private PEM path, public PEM path) of a new P-256 key."""
    private = os.path.join(directory, name + ".key")
    public = os.path.join(directory, name + ".pub.pem")
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", private)
    openssl("pkey", "-in", private, "-pubout", "-out", public)
    return private, public


def _der_ecdsa_to_raw(der):
    """R||S (32 bytes each, RFC 7518 section 3.4) of a DER ECDSA-Sig-Value
    SEQUENCE { INTEGER r, INTEGER s }."""
    def read_len(buf, pos):
        n = buf[pos]
        if n < 0x80:
            return n, pos + 1
        count = n & 0x7F
        return int.from_bytes(buf[pos + 1:pos + 1 + count], "big"), pos + 1 + count

    if der[0] != 0x30:
        raise HarnessError("ECDSA signature is not a DER SEQUENCE")
    _, pos = read_len(der, 1)
    parts = []
    for _ in range(2):
        if der[pos] != 0x02:
            raise HarnessError("ECDSA signature member is not an INTEGER")
        n, pos = read_len(der, pos + 1)
        parts.append(int.from_bytes(der[pos:pos + n], "big"))
        pos += n
    return b"".join(v.to_bytes(32, "big") for v in parts)


def sign_jwt(algorithm, claims, key, header=None):
    """A compact JWT over <claims> (a dict). <key>: the HS256 secret bytes,
    or the path of the RS256/ES256 private key PEM. <header> overrides the
    JOSE header (default {"alg": algorithm, "typ": "JWT"})."""
    jose = header if header is not None else {"alg": algorithm, "typ": "JWT"}
    signing_input = (b64url(json.dumps(jose, separators=(",", ":")).encode()) + "." +
                     b64url(json.dumps(claims, separators=(",", ":")).encode()))
    if algorithm == "HS256":
        signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    elif algorithm in ("RS256", "ES256"):
        signature = openssl("dgst", "-sha256", "-sign", key, input=signing_input.encode())
        if algorithm == "ES256":
            signature = _der_ecdsa_to_raw(signature)
    else:
        raise HarnessError(f"unknown JWT algorithm {algorithm}")
    return signing_input + "." + b64url(signature)


# --------------------------------------------------------------------------
# PROXY protocol (haproxy's proxy-protocol.txt, versions 1 and 2).

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(src_ip, src_port, dst_ip=HOST, dst_port=80):
    return f"PROXY TCP4 {src_ip} {dst_ip} {src_port} {dst_port}\r\n".encode()


def proxy_v2(src_ip, src_port, dst_ip=HOST, dst_port=80):
    """A v2 PROXY header: command PROXY, family TCP over IPv4."""
    body = (socket.inet_aton(src_ip) + socket.inet_aton(dst_ip) +
            struct.pack(">HH", src_port, dst_port))
    return PROXY_V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack(">H", len(body)) + body


def raw_upgrade(port, prefix=b"", path="/", extra=(), timeout=5.0, source=None):
    """Connects (from local address <source>, e.g. "127.0.0.9", if given),
    sends <prefix> (e.g. a PROXY header) and an upgrade request; returns
    (status, headers, socket, leftover). The caller closes the socket.
    Status 0: the connection closed without any HTTP answer."""
    sock = socket.create_connection((HOST, port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    key = new_key()
    sock.sendall(prefix + upgrade_head(path, f"{HOST}:{port}", key, extra=extra))
    try:
        head, leftover = read_head(sock, timeout)
    except HarnessError:
        return 0, {}, sock, b""
    status_line, headers = parse_head(head)
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
    if status == 101 and headers.get("sec-websocket-accept") != accept_key(key):
        sock.close()
        raise HarnessError("bad Sec-WebSocket-Accept")
    return status, headers, sock, leftover


def ask_backend(port, command="whoami", prefix=b"", path="/", extra=(), source=None):
    """Opens a session (see raw_upgrade), sends the text <command>, returns
    the back end's text answer and closes cleanly. Raises HarnessError
    unless the handshake is answered with 101."""
    status, headers, sock, leftover = raw_upgrade(port, prefix, path, extra, source=source)
    try:
        if status != 101:
            raise HarnessError(f"handshake answered {status} instead of 101")
        return converse(sock, leftover, command)
    finally:
        sock.close()


def converse(sock, leftover, command):
    """On an upgraded <sock> (<leftover>: bytes read past the 101), sends the
    text <command>, returns the back end's text answer and closes the
    WebSocket cleanly."""
    ws = FrameSocket(sock, leftover, mask=True)
    ws.send_text(command)
    answer = ws.recv_message(timeout=5)
    if answer is None or answer[0] != OP_TEXT:
        raise HarnessError(f"no text answer to {command!r}: {answer!r}")
    ws.send_close(1000)
    ws.recv_close(timeout=5)
    return answer[1].decode()


# --------------------------------------------------------------------------
# TOML with nested tables and arrays of tables.

def _toml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list) and all(not isinstance(x, dict) for x in v):
        return "[" + ", ".join(_toml_scalar(x) for x in v) + "]"
    raise HarnessError(f"cannot render {v!r} as TOML")


def _is_table_array(v):
    return isinstance(v, list) and v and all(isinstance(x, dict) for x in v)


def _render_table(lines, path, table, array=False):
    lines.append(f"[[{path}]]" if array else f"[{path}]")
    nested = []
    for key, value in table.items():
        if isinstance(value, dict) or _is_table_array(value):
            nested.append((key, value))
        else:
            lines.append(f"{key} = {_toml_scalar(value)}")
    lines.append("")
    for key, value in nested:
        if isinstance(value, dict):
            _render_table(lines, f"{path}.{key}", value)
        else:
            for item in value:
                _render_table(lines, f"{path}.{key}", item, array=True)


def render_toml(doc):
    """TOML text of <doc>: top-level dicts become tables, lists of dicts
    arrays of tables, recursively (sub-tables follow their parent)."""
    lines = ["# generated by tests/integration/tlsutil.py", ""]
    for key, value in doc.items():
        if isinstance(value, dict):
            _render_table(lines, key, value)
        elif _is_table_array(value):
            for item in value:
                _render_table(lines, key, item, array=True)
        else:
            raise HarnessError(f"top-level key {key} must be a table")
    return "\n".join(lines)


def gateway_config(listeners=None, pools=None, routes=None, limits=None,
                   timeouts=None, log=None):
    """TOML text for harness.Wsgate: "@PORT@" is the first listener's port
    and "@TMP@" the gateway's directory. <listeners>: dicts for
    [[listener]] (default one plain listener on @PORT@); <pools>: dicts with
    name, hash, backends (dicts or address strings) and optional tls;
    <routes> default "/" -> the first pool."""
    listeners = listeners or [{"listen": f"{HOST}:@PORT@"}]
    pools = pools or []
    routes = routes or [{"path_prefix": "/", "pool": pools[0]["name"]}]
    rendered_pools = []
    for pool in pools:
        p = {"name": pool["name"], "hash": pool.get("hash", "ip"),
             "algorithm": pool.get("algorithm", "ring")}
        if "tls" in pool:
            p["tls"] = pool["tls"]
        p["backend"] = [b if isinstance(b, dict) else {"address": getattr(b, "address", b)}
                        for b in pool["backends"]]
        rendered_pools.append(p)
    return render_toml({
        "server": {"workers": 1, "max_connections": 100000, "drain_timeout": "1s"},
        "log": {"access": "@TMP@/access.log", "format": "json",
                "error": "@TMP@/error.log", "level": "info", **(log or {})},
        "listener": listeners,
        "timeouts": {"handshake": "5s", "connect": "2s", "idle": "5m", **(timeouts or {})},
        "heartbeat": {"interval": "0s", "timeout": "10s", "peers": "client"},
        "limits": {"max_header_bytes": 16384, "max_message_bytes": 0,
                   "max_connections_per_ip": 0, "buffer_bytes": 262144, **(limits or {})},
        "route": routes,
        "pool": rendered_pools,
    })


# --------------------------------------------------------------------------
# The test back end (backend.py) serving wss:// with a given certificate.

class TlsBackend(Backend):
    """backend.py in echo mode behind TLS (--tls-cert/--tls-key)."""

    def __init__(self, cert, key, id="backend", mode="echo"):
        super().__init__(mode=mode, id=id, tls_cert=cert, tls_key=key)
        self.cert, self.key = cert, key
