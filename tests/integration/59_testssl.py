"""An outside scanner's view of a TLS listener with the default profile:
testssl.sh (Debian package testssl.sh, /usr/bin/testssl) checks protocols
(-p), cipher categories (-s) and server defaults including session
resumption (-S) and writes JSON; the test fails on any protocol below TLS
1.2 offered, any obsolete cipher category offered (NULL, aNULL, export, LOW
with RC4 and DES, 3DES/IDEA, CBC), or resumption by ticket or by session ID
not supported. testssl runs offline (its own cipher mapping files, no DNS)
in socket mode, so that SSLv2/SSLv3 and the weak suites are really offered
to wsgate rather than skipped for lack of support in the local OpenSSL.
Skipped where testssl is not installed, and under the sanitizer build."""

import json
import os
import shutil
import subprocess

from harness import HOST, Backend, Wsgate, check, main, new_tmpdir, sanitizer_build, test
from tlsutil import Ca, gateway_config

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")
OLD_PROTOCOLS = ("SSLv2", "SSLv3", "TLS1", "TLS1_1")


@test(timeout=280)
def testssl_finds_the_default_profile_clean():
    if TESTSSL is None:
        return "skipped: testssl not installed"
    if sanitizer_build():
        # The scan checks what the listener offers, not memory safety, and
        # costs ~40 s of CPU (testssl is bash); once per CI run is enough.
        return "skipped under the sanitizer build"
    d = new_tmpdir("pki")
    cert, key = Ca(d).issue("gw.test", dns=["gw.test"], ips=[HOST])
    listener = {"listen": f"{HOST}:@PORT@", "tls": {"cert": cert, "key": key}}
    report = os.path.join(d, "testssl.json")
    with Backend("echo", id="b1") as b, \
            Wsgate(gateway_config([listener], [{"name": "main", "backends": [b]}])) as gw:
        proc = subprocess.run([TESTSSL, "--quiet", "--warnings", "off", "--color", "0", "--nodns", "none",
                               "--connect-timeout", "10", "--openssl-timeout", "10",
                               "-p", "-s", "-S", "--jsonfile", report, f"{HOST}:{gw.port}"],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=260)
    check(os.path.exists(report), f"testssl wrote no JSON (exit {proc.returncode}): {proc.stderr[-400:]}")
    with open(report) as f:
        findings = {item["id"]: item["finding"] for item in json.load(f)}
    check("interrupted" not in findings.get("scanTime", ""), f"scan interrupted: {findings.get('scanTime')}")
    for protocol in OLD_PROTOCOLS:
        check(findings.get(protocol) == "not offered", f"{protocol}: {findings.get(protocol)!r}")
    check(findings.get("TLS1_2", "").startswith("offered"), f"TLS1_2: {findings.get('TLS1_2')!r}")
    check(findings.get("TLS1_3", "").startswith("offered"), f"TLS1_3: {findings.get('TLS1_3')!r}")
    categories = {k: v for k, v in findings.items() if k.startswith("cipherlist_")}
    check(len(categories) >= 6, f"cipher categories in the report: {sorted(categories)}")
    # testssl 3.0 names the CBC category AVERAGE, 3.2 OBSOLETED; only the
    # AEAD categories (STRONG, STRONG_FS, STRONG_NOFS) may be offered.
    weak = {k: v for k, v in categories.items() if not k.startswith("cipherlist_STRONG") and v != "not offered"}
    check(not weak, f"obsolete cipher categories not refused: {weak}")
    check(any(v.startswith("offered") for k, v in categories.items() if k.startswith("cipherlist_STRONG")),
          f"no strong cipher offered: {categories}")
    for kind in ("ticket", "ID"):
        value = findings.get(f"sessionresumption_{kind}")
        check(value == "supported", f"session resumption by {kind}: {value!r}")
    return f"protocols, {len(categories)} cipher categories and resumption clean"


if __name__ == "__main__":
    main()
