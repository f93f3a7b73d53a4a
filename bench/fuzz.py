"""Fuzz every operation of a real `triage serve` with Schemathesis, every check on, as a staff and an admin key.

    python bench/fuzz.py                       # 25 examples per operation, both keys
    python bench/fuzz.py --max-examples 100

Starts the service on a fresh SQLite file in a temporary folder (demo data loaded, so topics exist),
creates a staff key (with unmask) and an admin key, and runs ``schemathesis run --checks all`` once
per key against ``/openapi.json``. Prints, per key, the operations tested, server errors (5xx) and
every failed check by name (Schemathesis's summary; its full output is kept beside the temporary
database); exits 1 when any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from api_latency import free_port, stop, wait_ready  # noqa: E402


def fuzz(base: str, key: str, examples: int, out: Path) -> dict:
    cmd = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{base}/openapi.json", "--checks", "all",
           "-H", f"X-API-Key: {key}", "--max-examples", str(examples), "--seed", "1", "--workers", "1",
           "--no-color"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    (out / "stdout.txt").write_text(proc.stdout, encoding="utf-8")
    # the summary's failure lines: "❌ ST101 Server error: 1"
    failures = {f"{code} {name.strip()}": int(n) for code, name, n in re.findall(r"❌ (ST\d+) ([^:\n]+): (\d+)", proc.stdout)}
    tested = re.search(r"Tested: (\d+)", proc.stdout)
    return {"exit": proc.returncode, "operations": int(tested.group(1)) if tested else 0,
            "server_errors": failures.get("ST101 Server error", 0), "failed_checks": failures,
            "report": str(out / "stdout.txt")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-examples", type=int, default=25)
    args = ap.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="triage-fuzz-"))
    env = {**os.environ, "TRIAGE_HOME": str(home), "TRIAGE_DATABASE_URL": f"sqlite:///{home / 'fuzz.db'}",
           "TRIAGE_RECLUSTER_EVERY": "1000000"}
    triage = [sys.executable, "-m", "triage.cli"]
    keys = {}
    for role, extra in (("staff", ["--unmask"]), ("admin", [])):
        keys[role] = subprocess.run([*triage, "keys", "create", "--role", role, "--rate", "0", *extra, "--name", "fuzz"],
                                    env=env, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    port = free_port()
    server = subprocess.Popen([*triage, "serve", "--port", str(port), "--workers", "1", "--demo", "--quiet"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    failed = False
    try:
        wait_ready(base, server, lambda: server.stderr.read()[-2000:])
        for role, key in keys.items():
            out = home / role
            out.mkdir()
            res = fuzz(base, key, args.max_examples, out)
            failed |= bool(res["failed_checks"]) or res["server_errors"] > 0
            print(json.dumps({"key": role, **res}, ensure_ascii=False))
    finally:
        stop(server, 30)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
