"""Reading suppression files for import: CSV with a header row, or a JSON array whose
bad element is named by the line it starts on."""

from __future__ import annotations

import csv
import io
import json

from mailops.errors import MailopsError


def csv_rows(path: str, text: str, columns: tuple[str, ...]):
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "target" not in [f.strip() for f in reader.fieldnames]:
        raise MailopsError(f"{path}:1: target: the CSV header must name the columns ({', '.join(columns)})")
    for row in reader:
        if None in row:
            raise MailopsError(f"{path}:{reader.line_num}: (row): more values than columns in the header")
        cleaned = {k.strip(): v for k, v in row.items() if k is not None}
        if not any((v or "").strip() for v in cleaned.values()):
            continue                                    # blank line
        yield reader.line_num, {k: v for k, v in cleaned.items() if v is not None and v.strip() != ""}


def json_rows(path: str, text: str):
    """The elements of a JSON array with the line each starts on (the array is decoded
    element by element, so a bad element is named by its line)."""
    decoder = json.JSONDecoder()
    position = _skip_space(text, 0)
    if position >= len(text) or text[position] != "[":
        raise MailopsError(f"{path}:{text.count(chr(10), 0, position) + 1}: (file): expected a JSON array of "
                           "entries ([{\"target\": ...}, ...])")
    position = _skip_space(text, position + 1)
    first = True
    while True:
        if position >= len(text):
            raise MailopsError(f"{path}:{text.count(chr(10)) + 1}: (file): the JSON array is not closed with ]")
        if text[position] == "]":
            break
        if not first:
            if text[position] != ",":
                raise MailopsError(f"{path}:{text.count(chr(10), 0, position) + 1}: (file): expected , or ] "
                                   "between entries")
            position = _skip_space(text, position + 1)
        line = text.count("\n", 0, position) + 1
        try:
            value, position = decoder.raw_decode(text, position)
        except (ValueError, RecursionError) as exc:
            raise MailopsError(f"{path}:{line}: (file): not JSON ({str(exc)[:100]})") from None
        first = False
        yield line, value
        position = _skip_space(text, position)
    if _skip_space(text, position + 1) != len(text):
        raise MailopsError(f"{path}:{text.count(chr(10), 0, position) + 1}: (file): text after the JSON array")


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position
