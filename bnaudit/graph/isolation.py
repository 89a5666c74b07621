"""Readers that may never return are tried in a forked child first, with a time budget.

HDF5 can spin for ever in its own C code on a corrupted heap (a fuzzed ``.h5`` did), holding the
interpreter, where no signal handler or thread can reach it; a child process can be killed.  The
child only says whether reading finished: nothing comes back from it (no pickles cross), and the
file is then read again in this process, which costs a second read of a file known to end.
"""

from __future__ import annotations

import os
import signal
import time

from bnaudit.graph.model import ArtifactError

DEFAULT_SECONDS = 30.0


def read_seconds() -> float:
    """The budget for reading one artifact (``BNAUDIT_READ_TIMEOUT``, 0 for none)."""
    try:
        return float(os.environ.get("BNAUDIT_READ_TIMEOUT", DEFAULT_SECONDS))
    except ValueError:
        return DEFAULT_SECONDS


def isolated(path: str, function, *args):
    """``function(*args)``, once a child process has shown that it finishes within the budget."""
    seconds = read_seconds()
    if seconds <= 0 or not hasattr(os, "fork"):
        return function(*args)
    pid = os.fork()
    if pid == 0:  # the child: try, and leave without running the parent's exit handlers
        try:
            function(*args)
        except BaseException:  # noqa: BLE001 - the parent reads again and reports it
            pass
        finally:
            os._exit(0)
    deadline = time.monotonic() + seconds
    pause = 0.001
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise ArtifactError(path, f"reading it did not finish in {seconds:g} s (BNAUDIT_READ_TIMEOUT): "
                                      "the file is damaged in a way its format library loops on")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    return function(*args)
