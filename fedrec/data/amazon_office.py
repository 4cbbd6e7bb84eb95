"""E-commerce platform: Amazon Office Products 2014 5-core, as shipped by ysh-1998/LRD."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from fedrec.data.reader import read_rows, require_file
from fedrec.data.types import DataFormatError, PlatformData

HOW_TO_GET = "Run `fedrec data download` (needs internet) or set FEDREC_DATA to a folder holding amazon-office/."


def load_amazon_office(folder: Path, name: str = "ecommerce") -> PlatformData:
    """Load the Amazon Office split as shipped: dev = valid, test = test.

    Parameters
    ----------
    folder : pathlib.Path
        The ``amazon-office`` folder (``train.csv``, ``dev.csv``, ``test.csv``,
        ``Office.text``, ``Office.item2index``).
    name : str, default "ecommerce"
        Platform name to give the result.

    Returns
    -------
    PlatformData
        Items in ascending ``item_id`` order; history ordered by (time, item id);
        the ``neg_items`` columns are ignored, as PROTOCOL.md says.
    """
    files = {
        f: require_file(folder / f, HOW_TO_GET)
        for f in ("train.csv", "dev.csv", "test.csv", "Office.text", "Office.item2index")
    }
    asin_text = {a: t for _, (a, t) in read_rows(files["Office.text"], [str, str])}
    item_of_asin: dict[str, int] = {}
    for line, (asin, item) in read_rows(files["Office.item2index"], [str, int], header=False):
        if asin not in asin_text:
            raise DataFormatError(f"{files['Office.item2index']}:{line}: ASIN {asin!r} has no text in Office.text")
        item_of_asin[asin] = item
    raw_items = sorted(item_of_asin.values())
    index = {raw: i for i, raw in enumerate(raw_items)}
    texts = [""] * len(raw_items)
    for asin, raw in item_of_asin.items():
        texts[index[raw]] = asin_text[asin]

    def item_index(path: Path, line: int, raw: int) -> int:
        if raw not in index:
            raise DataFormatError(f"{path}:{line}: item_id {raw} is not in Office.item2index")
        return index[raw]

    history: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for line, (user, item, time) in read_rows(files["train.csv"], [int, int, int]):
        history[user].append((time, item_index(files["train.csv"], line, item)))
    held: dict[str, dict[int, int]] = {}
    for split, fname in (("valid", "dev.csv"), ("test", "test.csv")):
        held[split] = {}
        for line, (user, item, _time, *_) in read_rows(files[fname], [int, int, int]):
            if user in held[split]:
                raise DataFormatError(f"{files[fname]}:{line}: user {user} appears twice")
            held[split][user] = item_index(files[fname], line, item)
    users = sorted(held["valid"])
    if set(users) != set(held["test"]):
        raise DataFormatError(f"{files['dev.csv']} and {files['test.csv']} hold different users")
    train = [np.array([i for _, i in sorted(history[u])], dtype=np.int64) for u in users]
    return PlatformData(
        name=name,
        item_ids=[str(r) for r in raw_items],
        item_texts=texts,
        user_ids=[str(u) for u in users],
        train=train,
        valid=np.array([held["valid"][u] for u in users], dtype=np.int64),
        test=np.array([held["test"][u] for u in users], dtype=np.int64),
        sequential=True,
    )
