"""prun's TLS settings under a scanner: sslyze's check against Mozilla's configurations, per --tls-profile.

    pip install sslyze                    # best in a venv of its own (it pins its own OpenSSL and cryptography)
    python -m benchmarks.tls_scan --sslyze /path/to/venv/bin/sslyze

Starts prun (one worker, benchmarks/apps/tiny.py) with a P-256 certificate from a local CA made with the
`openssl` command (harness/tls.py), once with Python's and OpenSSL's defaults and once per profile, and
runs `sslyze --mozilla_config=PROFILE` on it (intermediate for the defaults). Records what sslyze finds
against each configuration, and the curves it saw accepted, in results/tls-profiles.md and .json. The
certificate's chain is the local CA's, which no trust store has: sslyze's certificate_path_validation
finding is expected, and is the certificate's, not the server's settings. Not run by CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness.tls import make_certificate

APPS = Path(__file__).parent / "apps"
RESULTS = Path(__file__).parent / "results"
PROFILES = ("default", "intermediate", "modern")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scan(sslyze: str, profile: str, cert: Path, key: Path) -> dict:
    """Start prun with `profile`, run sslyze on it: what it found."""
    port = free_port()
    prun = os.path.join(os.path.dirname(sys.executable), "prun")
    options = [] if profile == "default" else ["--tls-profile", profile]
    cmd = [prun, "tiny:app", "-i", "1", "-b", f"127.0.0.1:{port}", "--chdir", str(APPS), "--certfile", str(cert),
           "--keyfile", str(key), *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"prun did not serve: {' '.join(cmd)}") from None
                time.sleep(0.05)
        against = "intermediate" if profile == "default" else profile
        done = subprocess.run([sslyze, f"--mozilla_config={against}", f"127.0.0.1:{port}"], capture_output=True,
                              text=True, timeout=300)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    out = done.stdout
    compliance = out[out.find("COMPLIANCE AGAINST"):] if "COMPLIANCE AGAINST" in out else ""
    findings = dict(re.findall(r"^\s+\* (\w+): (.*)$", compliance, re.MULTILINE))
    curves = re.search(r"Supported curves:\s+(.*)", out)
    versions = [v for v in ("1.0", "1.1", "1.2", "1.3")
                if re.search(rf"\* TLS {re.escape(v)} Cipher Suites:\n\s+Attempted to connect using \d+ cipher suites\.\n\n"
                             r"\s+The server accepted", out)]
    return {"profile": profile, "checked_against": against, "command": " ".join(cmd[1:]),
            "tls_versions": versions, "curves": curves.group(1).strip() if curves else "",
            "findings": findings, "compliant_but_for_the_certificate": set(findings) <= {"certificate_path_validation"}}


def markdown(results: list[dict], sslyze_version: str) -> str:
    out = ["# prun's TLS profiles under sslyze", "",
           f"sslyze {sslyze_version} (`--mozilla_config`, Mozilla's guidelines 5.7), against prun serving a P-256 "
           f"certificate from a local CA; Python {platform.python_version()}'s `ssl` on {ssl.OPENSSL_VERSION}. "
           "`certificate_path_validation` is the local CA's, which no trust store has. A Python with "
           "`ssl.SSLContext.set_groups` (3.15+) offers the profiles' three groups (X25519, prime256v1, secp384r1); "
           "before, one each (modern: X25519, intermediate: prime256v1).", "",
           "| settings | checked against | TLS versions | curves accepted | sslyze's findings |", "|---|---|---|---|---|"]
    for r in results:
        findings = "; ".join(f"{k}: {v}" for k, v in r["findings"].items()) or "none"
        out.append(f"| {r['profile']} | {r['checked_against']} | {', '.join(r['tls_versions'])} | {r['curves']} | "
                   f"{findings} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tls_scan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sslyze", default=shutil.which("sslyze") or "", help="the sslyze executable")
    args = parser.parse_args(argv)
    if not args.sslyze or not os.access(args.sslyze, os.X_OK):
        print("benchmarks.tls_scan: sslyze not found (pip install sslyze; --sslyze PATH)", file=sys.stderr)
        return 1
    version = subprocess.run([args.sslyze, "--help"], capture_output=True, text=True).stdout
    match = re.search(r"SSLyze version (\S+)", version)
    with tempfile.TemporaryDirectory(prefix="prun-tls-scan-") as tmp:
        cert = make_certificate(Path(tmp))
        results = [scan(args.sslyze, profile, cert.cert, cert.key) for profile in PROFILES]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tls-profiles.json").write_text(json.dumps({"sslyze": match.group(1) if match else None,
                                                           "results": results}, indent=2) + "\n")
    text = markdown(results, match.group(1) if match else "?")
    (RESULTS / "tls-profiles.md").write_text(text)
    print(text)
    return 0 if all(r["compliant_but_for_the_certificate"] for r in results if r["profile"] != "default") else 1


if __name__ == "__main__":
    sys.exit(main())
