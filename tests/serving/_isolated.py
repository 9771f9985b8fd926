"""Running a decoder in its own Python process, so that a crash of a native parser (a
segfault) fails the test that fed it instead of killing pytest."""

from __future__ import annotations

import os
import subprocess
import sys

# What the child runs: it decodes stdin with ``serving.codecs.<call>`` and prints the rows
# it got, or the InputError (type and message) it raised; anything else is a traceback.
_CHILD = """
import sys
from serving import codecs
from serving.codecs import sagemaker
from serving.errors import MMServeError
data = sys.stdin.buffer.read()
try:
    table = {call}
except MMServeError as err:
    print(type(err).__name__, err.status, err.message)
else:
    print("rows", table.num_rows)
"""


def decode_in_child(data: bytes, call: str = "codecs.decode(data, codecs.JSONL)") -> str:
    """What decoding ``data`` with ``call`` printed in a child process; fails (with its exit
    status, e.g. -11 for SIGSEGV) if the child did not end normally."""
    child = subprocess.run(
        [sys.executable, "-c", _CHILD.format(call=call)],
        input=data,
        capture_output=True,
        timeout=300,
        cwd=os.getcwd(),
    )
    assert child.returncode == 0, f"the decoder died: exit {child.returncode}\n{child.stderr!r}"
    return child.stdout.decode().strip()
