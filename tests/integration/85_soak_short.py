"""A short soak (scripts/soak): 200 sessions for 60 s exchanging numbered,
checksummed messages both ways through 5 reloads, the removal and return
of a back end and the restart of another. No message may be lost,
duplicated or corrupted; deliberately closed sessions must get their
documented close code; RSS must come back within 10% (not checked under
sanitizers)."""

import os
import subprocess

from harness import HERE, PYTHON, check, main, sanitizer_build, test

SOAK = os.path.join(os.path.dirname(os.path.dirname(HERE)), "scripts", "soak")


@test(timeout=200)
def soak_200_sessions_60s():
    argv = [PYTHON, SOAK, "--sessions", "200", "--minutes", "1", "--reloads", "5",
            "--interval", "0.5", "--build", os.environ.get("WSGATE_BUILD", "build")]
    if sanitizer_build():
        argv.append("--no-rss-check")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    out = done.stdout + done.stderr
    lines = out.strip().splitlines()
    summary = [l.strip() for l in lines if l.startswith("  ") or l.startswith("soak:")]
    check(done.returncode == 0 and "soak: PASS" in out,
          f"soak exited {done.returncode}: " + " | ".join(summary or lines[-15:]))
    totals = [l for l in summary if "ran to the end" in l or "RSS" in l or "closed (" in l]
    return " | ".join(totals)


if __name__ == "__main__":
    main()
