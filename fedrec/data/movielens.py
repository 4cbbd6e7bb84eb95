"""Video platform: MovieLens 100K, every rating an implicit interaction."""

from __future__ import annotations

from pathlib import Path

from fedrec.data.reader import read_rows, require_file
from fedrec.data.split import leave_one_out_by_time
from fedrec.data.types import DataFormatError, PlatformData

HOW_TO_GET = "Run `fedrec data download` (needs internet) or set FEDREC_DATA to a folder holding ml-100k/."


def load_movielens_100k(folder: Path, name: str = "video") -> PlatformData:
    """Load MovieLens 100K with the protocol's item text and leave-one-out split.

    Parameters
    ----------
    folder : pathlib.Path
        The ``ml-100k`` folder (``u.data``, ``u.item``, ``u.genre``).
    name : str, default "video"
        Platform name to give the result.

    Returns
    -------
    PlatformData
        Item text ``"<title> | genres: <g1>, <g2>"``; per user, sorted by
        (timestamp, item id): last = test, second last = valid, rest = train.
    """
    u_data = require_file(folder / "u.data", HOW_TO_GET)
    u_item = require_file(folder / "u.item", HOW_TO_GET)
    u_genre = require_file(folder / "u.genre", HOW_TO_GET)
    genres: dict[int, str] = {}
    for _, (gname, gidx) in read_rows(u_genre, [str, int], delimiter="|", header=False, encoding="latin-1"):
        genres[gidx] = gname
    texts: dict[int, str] = {}
    for line, row in read_rows(
        u_item, [int, str], delimiter="|", header=False, encoding="latin-1", min_fields=5 + len(genres)
    ):
        flags = row[5 : 5 + len(genres)]
        if any(f not in ("0", "1") for f in flags):
            raise DataFormatError(f"{u_item}:{line}: genre flags must be 0 or 1, got {flags}")
        names = [genres[g] for g, f in enumerate(flags) if f == "1"]
        texts[row[0]] = f"{row[1]} | genres: {', '.join(names)}"
    events = []
    for line, (user, item, _rating, ts) in read_rows(u_data, [int, int, int, int], header=False):
        if item not in texts:
            raise DataFormatError(f"{u_data}:{line}: item {item} is not in u.item")
        events.append((user, item, ts))
    return leave_one_out_by_time(name, events, texts)
