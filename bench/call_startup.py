"""How fast ``cloudmanagers call`` answers, as a whole process, against a bench agent on the broker.

Measured: ``cloudmanagers --version`` (start-up alone) and ``cloudmanagers call read cm_bench
--target UUID`` (start-up, broker login, request, reply), each the median of RUNS processes;
then ``call ping --target UUID`` against ``call read --target UUID``: both wait for one reply
from the same agent, so the difference is what a targeted ping spends after its reply (before,
it waited out the 2 s collection window). Targets: ``call read`` <= 150 ms, ping within 50 ms
of the reply. The interpreter and ``import pika`` alone are timed beside them: the floor on
this machine, which other load moves, so every figure comes from the same rounds.
"""

import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from typing import Dict, List

from bench.agent_harness import Process

RUNS = 15
READ_TARGET_MS, PING_EXTRA_MS = 150.0, 50.0


def command() -> List[str]:
    """The installed ``cloudmanagers`` script beside this interpreter, as an operator runs it."""
    script = os.path.join(os.path.dirname(sys.executable), "cloudmanagers")
    return [script] if os.path.exists(script) else [shutil.which("cloudmanagers") or "cloudmanagers"]


def timed_ms(argv: List[str], expect: int) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    elapsed = (time.perf_counter() - started) * 1000
    if proc.returncode != expect:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return elapsed


def main() -> int:
    cli = command()
    agent_uuid = f"bench-agent-{uuid.uuid4().hex[:8]}"
    runs = {
        "python -c pass (the interpreter alone)": [sys.executable, "-c", "pass"],
        "python -c 'import pika' (the AMQP library alone)": [sys.executable, "-c", "import pika"],
        "cloudmanagers --version": [*cli, "--version"],
        "cloudmanagers call read --target": [*cli, "call", "read", "cm_bench", "--name", "vm-1", "--target", agent_uuid],
        "cloudmanagers call ping --target": [*cli, "call", "ping", "--target", agent_uuid],
    }
    times: Dict[str, List[float]] = {name: [] for name in runs}
    with Process("agent", agent_uuid, "8", "0"):
        subprocess.run(runs["cloudmanagers call read --target"], capture_output=True)  # warm-up
        for _ in range(RUNS):  # round-robin, so that the machine's load drifts into every figure alike
            for name, argv in runs.items():
                times[name].append(timed_ms(argv, 0))
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, value in median.items():
        print(f"{name}: {value:.0f} ms (median of {RUNS} processes)")
    read, ping = median["cloudmanagers call read --target"], median["cloudmanagers call ping --target"]
    extra = ping - read
    print(f"call read --target {read:.0f} ms (target <= {READ_TARGET_MS:.0f} ms): "
          f"{'OK' if read <= READ_TARGET_MS else 'OVER'}")
    print(f"call ping --target ends {extra:.0f} ms after a read's reply (target <= {PING_EXTRA_MS:.0f} ms): "
          f"{'OK' if extra <= PING_EXTRA_MS else 'OVER'}")
    return 0 if read <= READ_TARGET_MS and extra <= PING_EXTRA_MS else 1


if __name__ == "__main__":
    sys.exit(main())
