"""Every decoder fed random, truncated and mutated bodies in a child process
(:mod:`tests.serving._fuzz`): a crash (a segfault) or a memory blow-up fails the test, as
does any error but an mmserve one (a 5xx). A fixed seed and number of bodies per decoder;
``python -m tests.serving._fuzz all <seed> <cases>`` runs more."""

from __future__ import annotations

import os
import subprocess
import sys

SEED = 0
CASES = 250


def test_no_body_crashes_a_decoder_or_gets_a_5xx() -> None:
    child = subprocess.run(
        [sys.executable, "-m", "tests.serving._fuzz", "all", str(SEED), str(CASES)],
        capture_output=True,
        timeout=300,
        cwd=os.getcwd(),
    )
    lines = child.stdout.decode().splitlines()
    last = next((line for line in reversed(lines) if " case " in line), "no case")
    found = [line for line in lines if " case " not in line or ": " in line]
    assert child.returncode == 0, (
        f"exit {child.returncode} at {last!r} (python -m tests.serving._fuzz <decoder> {SEED} "
        f"{CASES} replays it)\n" + "\n".join(found) + child.stderr.decode()[-2000:]
    )
