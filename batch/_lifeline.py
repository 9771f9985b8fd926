"""What a run's helper processes leave when the run is killed: nothing.

- **A pipe they watch.** The run holds the write end of a pipe; each helper watches the read
  end in a thread and exits when it reads end-of-file, which the kernel delivers when the run
  dies, however it dies (SIGKILL, SIGTERM, the OOM killer). With the helpers gone, the fork
  server (which ends when every process holding its "alive" pipe is gone: the run and the
  helpers) and then multiprocessing's resource tracker end too. ``PR_SET_PDEATHSIG`` would
  not do: a helper's parent is the fork server, not the run.
- **A scratch folder the next start removes.** The fork server's socket lives in
  ``<temp dir>/mmserve-batch/<pid>/``, locked (``flock``) by the process that made it for
  as long as it lives, and removed when it ends normally; the next run on the machine
  removes the folders of the processes that were killed. (The parts' temporary files are
  in the run's output, removed by its next start.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
from multiprocessing.util import Finalize
from pathlib import Path
from typing import IO, Any

_held: IO[str] | None = None  # this process's scratch lock, held for its whole life


def watch(reader: Any) -> None:
    """A helper's initializer: exit as soon as the run that started it is gone."""

    def wait() -> None:
        with contextlib.suppress(EOFError, OSError):
            reader.recv_bytes()  # nothing is ever sent: this returns only at the run's end
        os._exit(1)

    threading.Thread(target=wait, name="batch-lifeline", daemon=True).start()


def scratch() -> Path:
    """This process's scratch folder (made and locked on first use), once the folders of
    processes that are gone are removed."""
    global _held
    root = Path(tempfile.gettempdir(), "mmserve-batch")
    mine = root / str(os.getpid())
    if _held is not None:
        return mine
    root.mkdir(exist_ok=True)
    for folder in root.iterdir():
        if folder != mine and not _locked(folder / "lock"):
            shutil.rmtree(folder, ignore_errors=True)
    mine.mkdir(exist_ok=True)
    _held = open(mine / "lock", "w")  # noqa: SIM115 - held until this process ends
    fcntl.flock(_held, fcntl.LOCK_EX)
    # A process that ends normally takes it along, after multiprocessing's own clean-up
    # (its temporary folder, in this one, goes at priority -100).
    Finalize(None, _release, args=(mine,), exitpriority=-200)
    return mine


def _release(folder: Path) -> None:
    global _held
    if _held is not None:
        _held.close()
        _held = None
    shutil.rmtree(folder, ignore_errors=True)


def _locked(lock: Path) -> bool:
    """Whether a live process holds ``lock`` (a folder without one is its process's leftover)."""
    try:
        with open(lock) as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False
