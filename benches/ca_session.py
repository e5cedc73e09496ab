"""A real enrollment CA for the benchmark scripts (b4_daemons.py, media_load.py): `p2psip ca
init`, then `ca serve` on a loopback address for as long as the `with` block runs, stopped by
its PID afterwards (RFC 6940 §11: nodes contact the CA only to enroll).

    with ca_session(BIN, work, "b4.test", "127.0.9.1:5443", rate_limit="100/min") as (url, fp):
        subprocess.run([BIN, "enroll", aor, "--ca", url, "--ca-fingerprint", fp, ...])
"""

import contextlib
import os
import signal
import subprocess
import time


@contextlib.contextmanager
def ca_session(binary, work, domain, listen, rate_limit=None):
    ca_dir = os.path.join(work, "ca")
    subprocess.run([binary, "ca", "init", "--dir", ca_dir, "--domain", domain], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = open(os.path.join(work, "ca.out"), "w+")
    args = [binary, "ca", "serve", "--dir", ca_dir, "--listen", listen]
    if rate_limit:
        args += ["--rate-limit", rate_limit]
    ca = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL)
    try:
        # The first line it prints names its URL and the root's fingerprint.
        line = ""
        for _ in range(200):
            out.seek(0)
            line = out.read()
            if line.endswith("\n"):
                break
            time.sleep(0.05)
        url = next(w for w in line.split() if w.startswith("https://"))
        fingerprint = line.strip().rsplit(" ", 1)[1]
        yield url, fingerprint
    finally:
        ca.send_signal(signal.SIGTERM)
        ca.wait(10)
