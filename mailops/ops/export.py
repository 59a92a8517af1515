"""Write the bounce lists of a log to CSV files: every output checked and opened before
the log is read, written through private temporary files (0600) beside the target and
renamed into place only when all of it is written, removed on every error path."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TextIO

from mailops.errors import MailopsError
from mailops.ops.bounces import HARD_COLUMNS, SOFT_COLUMNS, write_csv
from mailops.ops.postfixlog import LogStats


@dataclass
class ExportResult:
    hard: int                       # hard-bounced recipients written
    soft: int                       # soft-bounced recipients (written, or only counted)
    soft_preview: list[dict] = field(default_factory=list)   # the first soft rows, when not written to a file


class _Output:
    """A CSV file to be: a temporary file beside it until commit()."""

    def __init__(self, path: Path, option: str) -> None:
        self.path = path
        if path.is_dir():
            raise MailopsError(f"{option} {path}: is a directory; give a file name, e.g. {path / 'bounces.csv'}")
        if path.exists() and not path.is_file():
            raise MailopsError(f"{option} {path}: exists and is not a regular file; give a file name")
        parent = path.parent
        if not parent.is_dir():
            raise MailopsError(f"{option} {path}: the directory {parent} does not exist; create it first")
        self.mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
        try:
            fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")   # 0600
        except OSError as exc:
            raise MailopsError(f"{option} {path}: cannot write in {parent}: {exc.strerror}") from None
        self.tmp = Path(tmp)
        self.file: TextIO = os.fdopen(fd, "w", newline="", encoding="utf-8")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.mode is not None:       # an existing list keeps its mode; a new one stays private
            os.chmod(self.tmp, self.mode)
        self.tmp.replace(self.path)

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def _open_outputs(output: Path | None, soft_output: Path | None) -> tuple[_Output | None, _Output | None]:
    if output is not None and soft_output is not None and output.absolute() == soft_output.absolute():
        raise MailopsError(f"-o and --soft-output both name {output}; give two files")
    hard = _Output(output, "-o") if output is not None else None
    try:
        soft = _Output(soft_output, "--soft-output") if soft_output is not None else None
    except BaseException:
        if hard is not None:
            hard.discard()
        raise
    return hard, soft


def export_bounces(read: Callable[[], LogStats], *, output: Path | None, soft_output: Path | None,
                   stdout: TextIO, soft_preview: int = 50) -> ExportResult:
    """Hard bounces as CSV to ``output`` (else ``stdout``), soft bounces to ``soft_output``
    (else the first ``soft_preview`` rows are returned for the caller to show).  ``read``
    reads the log; it is called only once every output is known to be writable."""
    hard_out, soft_out = _open_outputs(output, soft_output)
    outputs = [o for o in (hard_out, soft_out) if o is not None]
    try:
        stats = read()
        hard = write_csv(stats.bounces.hard_rows(), HARD_COLUMNS, hard_out.file if hard_out else stdout)
        if soft_out is not None:
            soft, preview = write_csv(stats.bounces.soft_rows(), SOFT_COLUMNS, soft_out.file), []
        else:
            soft, preview = stats.bounces.counts()[1], list(islice(stats.bounces.soft_rows(), soft_preview))
        while outputs:
            outputs[0].commit()
            outputs.pop(0)
    finally:
        for out in outputs:
            out.discard()
    return ExportResult(hard, soft, preview)
