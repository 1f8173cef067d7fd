"""What this process has open, for the tests that check the job engine and its result cache
let go of their files (Linux: /proc/self/fd; elsewhere the calling test is skipped)."""

import os
from pathlib import Path

import pytest


def open_files(under=None) -> list[str]:
    """The paths of this process's open file descriptors, sorted; only those under ``under``
    (a directory, resolved) when it is given."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("no /proc/self/fd to list this process's open files")
    names = []
    for fd in fds.iterdir():
        try:
            names.append(os.readlink(fd))
        except OSError:  # (the listing's own descriptor, closed by now)
            continue
    if under is not None:
        names = [name for name in names if name.startswith(str(Path(under).resolve()))]
    return sorted(names)
