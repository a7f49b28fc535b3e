"""Start-up time of a read command against bare Python, in one run (ratios, not absolutes).

    .venv/bin/python bench/startup.py [--runs 40]

Scripts call `mailguard config get KEY` many times; the goal is under 150 ms. Runs are
interleaved so machine noise hits both commands alike; medians are reported.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="mailguard-bench-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    env = {**os.environ, "MAILGUARD_HOME": home}
    commands = {
        "python3 -c pass": [sys.executable, "-c", "pass"],
        "mailguard config get …protocols.enabled": [
            str(BIN / "mailguard"), "config", "get", "web-and-email.email-client.protocols.enabled"],
        "mailguard ports list --json": [str(BIN / "mailguard"), "ports", "list", "--json"],
    }
    for command in commands.values():  # warm the page cache and .pyc files
        timed(command, env)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            samples[name].append(timed(command, env))
    base = statistics.median(samples["python3 -c pass"])
    print(f"{'command':<45} {'median ms':>10} {'ratio':>7}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:<45} {median * 1000:>10.1f} {median / base:>6.2f}x")


if __name__ == "__main__":
    main()
