"""A platform of the user's own: plain CSV files, no code needed.

Files (comma-separated, with a header row):

- ``interactions.csv``: ``user,item,timestamp`` (timestamp: any number);
- ``items.csv``: ``item,text`` (quote the text if it holds commas);
- ``friends.csv`` (optional): ``user,friend``.

Split: per user, sorted by (timestamp, item id): last = test, second last =
valid, rest = train; users with fewer than 3 interactions are not evaluated.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from fedrec.data.reader import read_rows, require_file
from fedrec.data.split import leave_one_out_by_time
from fedrec.data.types import DataFormatError, PlatformData

HOW_TO_GET = "A custom platform folder needs interactions.csv (user,item,timestamp) and items.csv (item,text)."


def timestamp(value: str) -> float:
    """Parse a timestamp: any finite number (NaN or infinity would make the time order undefined)."""
    t = float(value)
    if not math.isfinite(t):
        raise ValueError("must be a finite number")
    return t


def _exactly(path: Path, line: int, row: list[str], columns: str) -> None:
    n = columns.count(",") + 1
    if len(row) != n:
        raise DataFormatError(
            f"{path}:{line}: expected {n} comma-separated fields ({columns}), got {len(row)}; "
            "quote a field that holds commas"
        )


def load_custom(folder: Path, name: str = "custom") -> PlatformData:
    """Load a custom platform from ``interactions.csv``, ``items.csv`` and optional ``friends.csv``.

    Parameters
    ----------
    folder : pathlib.Path
        Folder holding the CSV files.
    name : str, default "custom"
        Platform name to give the result.
    """
    inter = require_file(folder / "interactions.csv", HOW_TO_GET)
    items = require_file(folder / "items.csv", HOW_TO_GET)
    texts: dict[str, str] = {}
    for line, row in read_rows(items, [str, str], delimiter=",", quoting=csv.QUOTE_MINIMAL):
        _exactly(items, line, row, "item,text")
        item, text = row
        if not text.strip():
            raise DataFormatError(f"{items}:{line}: item {item!r} has empty text")
        if item in texts:
            raise DataFormatError(f"{items}:{line}: item {item!r} is listed twice")
        texts[item] = text
    events = []
    for line, row in read_rows(inter, [str, str, timestamp], delimiter=",", quoting=csv.QUOTE_MINIMAL):
        _exactly(inter, line, row, "user,item,timestamp")
        user, item, ts = row
        if item not in texts:
            raise DataFormatError(f"{inter}:{line}: item {item!r} is not in {items.name}")
        events.append((user, item, ts))
    data = leave_one_out_by_time(name, events, texts)
    friends_file = folder / "friends.csv"
    if friends_file.is_file():
        index = {u: i for i, u in enumerate(data.user_ids)}
        graph: dict[int, set[int]] = {}
        for line, row in read_rows(friends_file, [str, str], delimiter=",", quoting=csv.QUOTE_MINIMAL):
            _exactly(friends_file, line, row, "user,friend")
            u, v = row
            if u in index and v in index and u != v:
                graph.setdefault(index[u], set()).add(index[v])
                graph.setdefault(index[v], set()).add(index[u])
        data.friends = {u: sorted(vs) for u, vs in graph.items()}
    return data
