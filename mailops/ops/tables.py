"""A count table with a bounded number of keys, for logs with any number of distinct values."""

from __future__ import annotations


class BoundedTable:
    """Counts per key and column for at most ``capacity`` keys.

    When a new key finds the table full, the half of the keys with the smallest totals is
    folded into the ``other`` row (their counts move there, so every column still adds up
    to the true total).  Busy keys stay: a key is exact from the last time it was kept,
    and keys folded early and seen again only gather what came after.  Amortised cost of
    an add is O(log capacity)."""

    def __init__(self, columns: tuple[str, ...], capacity: int, other: str) -> None:
        self.columns = columns
        self.capacity = max(2, capacity)
        self.other = other
        self.folded = 0                          # keys folded into `other` so far
        self._column = {name: i for i, name in enumerate(columns)}
        self._rows: dict[str, list[int]] = {}
        self._other = [0] * len(columns)

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, key: str, column: str, n: int = 1) -> None:
        try:                    # a kept key: most adds
            self._rows[key][self._column[column]] += n
            return
        except KeyError:        # a new key (or an unknown column, raised again below)
            pass
        row = self._rows.get(key)
        if row is None:
            if len(self._rows) >= self.capacity:
                self._fold()
            row = self._rows[key] = [0] * len(self.columns)
        row[self._column[column]] += n

    def _fold(self) -> None:
        by_total = sorted(self._rows.items(), key=lambda item: sum(item[1]), reverse=True)
        keep = self.capacity // 2
        for _key, row in by_total[keep:]:
            for i, n in enumerate(row):
                self._other[i] += n
        self.folded += len(by_total) - keep
        self._rows = dict(by_total[:keep])

    def rows(self, limit: int | None = None) -> dict[str, dict[str, int]]:
        """The ``limit`` keys with the largest totals (all kept keys without a limit), sorted
        by key, then the ``other`` row with the rest, when there is a rest."""
        kept = self._rows.items()
        other = list(self._other)
        if limit is not None and len(self._rows) > limit:
            ranked = sorted(kept, key=lambda item: (-sum(item[1]), item[0]))
            kept = ranked[:limit]
            for _key, row in ranked[limit:]:
                other = [a + b for a, b in zip(other, row)]
        out = {key: dict(zip(self.columns, row)) for key, row in sorted(kept)}
        if any(other) or self.folded or len(self._rows) > len(out):
            merged = out.get(self.other, dict.fromkeys(self.columns, 0))
            out[self.other] = {name: merged[name] + n for name, n in zip(self.columns, other)}
        return out
