"""Reading the files an inventory points at: only regular files, and only so much.

A FIFO would block the reader forever and a device such as /dev/zero never
ends, so a vars file or a secret file that is not a regular file is refused
before it is read, and a regular file is read only up to a cap:
:data:`MAX_YAML_BYTES` (1 MiB; real inventory files are a few KiB) and
:data:`MAX_SECRET_BYTES` (64 KiB; a token, TSIG key or password is far smaller).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_YAML_BYTES = 1 << 20
MAX_SECRET_BYTES = 64 << 10

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class UnsafeFile(Exception):
    """Not a regular file, or larger than the cap. ``str()`` completes "PATH ..."."""

    def __init__(self, reason: str, kind: str | None = None) -> None:
        super().__init__(reason)
        self.kind = kind  # "a FIFO", "a directory", ...; None when the file is only too large


def size_text(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 and size % (1 << 20) == 0 else f"{size >> 10} KiB"


def _refuse_special(mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "a special file")
        raise UnsafeFile(f"is not a regular file ({kind})", kind)


def read_regular_file(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks followed), at most ``limit`` of them.

    Raises :class:`UnsafeFile` for anything else and ``OSError`` when it cannot be read.
    """
    _refuse_special(os.stat(path).st_mode)  # never open a device: opening some has effects
    # O_NONBLOCK: should it have become a FIFO since the stat, opening it does not wait for a writer
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        _refuse_special(st.st_mode)
        too_large = UnsafeFile(f"is larger than {size_text(limit)}")
        if st.st_size > limit:
            raise too_large
        chunks, total = [], 0
        while total <= limit:  # the file may grow while it is read: stop one byte past the cap
            chunk = os.read(fd, min(1 << 16, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise too_large
        return b"".join(chunks)
    finally:
        os.close(fd)
