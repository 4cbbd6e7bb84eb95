"""Social platform: Last.fm HetRec 2011 (2K users) with its friend graph."""

from __future__ import annotations

import hashlib
import html
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from fedrec.data.reader import read_rows, require_file
from fedrec.data.types import DataFormatError, PlatformData

HOW_TO_GET = "Run `fedrec data download` (needs internet) or set FEDREC_DATA to a folder holding lastfm-hetrec2011/."
MAX_TAGS = 5


def _hash_key(user: int, artist: int) -> str:
    return hashlib.sha1(f"{user}:{artist}".encode()).hexdigest()


def load_lastfm_hetrec(folder: Path, name: str = "social") -> PlatformData:
    """Load Last.fm HetRec 2011 with the protocol's text, hash split and friend graph.

    Parameters
    ----------
    folder : pathlib.Path
        The ``lastfm-hetrec2011`` folder (``user_artists.dat``, ``artists.dat``,
        ``tags.dat``, ``user_taggedartists.dat``, ``user_friends.dat``).
    name : str, default "social"
        Platform name to give the result.

    Returns
    -------
    PlatformData
        Item text ``"<artist name> | tags: <t1>, ..."`` (up to 5 tags by descending
        assignment count, ties by tag id; the name alone if untagged). Per user,
        artists ordered by ``sha1("<userID>:<artistID>")``: first = test, second =
        valid, rest = train; train history ordered by (play count, artist id), so
        the most-played artists are the "most recent" end. Users with fewer than 3
        artists are dropped. ``sequential`` is False (there is no time order).
    """
    f = {
        n: require_file(folder / n, HOW_TO_GET)
        for n in ("user_artists.dat", "artists.dat", "tags.dat", "user_taggedartists.dat", "user_friends.dat")
    }
    names = {a: html.unescape(n) for _, (a, n, *_) in read_rows(f["artists.dat"], [int, str], min_fields=2)}
    tag_names = {t: v for _, (t, v) in read_rows(f["tags.dat"], [int, str], encoding="latin-1")}
    tag_counts: dict[int, Counter[int]] = defaultdict(Counter)
    for line, (_u, artist, tag, *_) in read_rows(f["user_taggedartists.dat"], [int, int, int], min_fields=3):
        if tag not in tag_names:
            raise DataFormatError(f"{f['user_taggedartists.dat']}:{line}: tag {tag} is not in tags.dat")
        tag_counts[artist][tag] += 1
    plays: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for line, (user, artist, weight) in read_rows(f["user_artists.dat"], [int, int, int]):
        if artist not in names:
            raise DataFormatError(f"{f['user_artists.dat']}:{line}: artist {artist} is not in artists.dat")
        plays[user].append((weight, artist))
    raw_items = sorted({a for rows in plays.values() for _, a in rows})
    index = {a: i for i, a in enumerate(raw_items)}
    texts = []
    for a in raw_items:
        top = sorted(tag_counts.get(a, Counter()).items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_TAGS]
        texts.append(f"{names[a]} | tags: {', '.join(tag_names[t] for t, _ in top)}" if top else names[a])
    users, train, valid, test = [], [], [], []
    for user in sorted(plays):
        rows = plays[user]
        if len(rows) < 3:
            continue
        by_hash = sorted(rows, key=lambda r: _hash_key(user, r[1]))
        rest = sorted(by_hash[2:])  # (play count, artist id) ascending
        users.append(user)
        test.append(index[by_hash[0][1]])
        valid.append(index[by_hash[1][1]])
        train.append(np.array([index[a] for _, a in rest], dtype=np.int64))
    user_index = {u: i for i, u in enumerate(users)}
    friends: dict[int, set[int]] = defaultdict(set)
    for _, (u, v) in read_rows(f["user_friends.dat"], [int, int]):
        if u in user_index and v in user_index and u != v:
            friends[user_index[u]].add(user_index[v])
            friends[user_index[v]].add(user_index[u])
    return PlatformData(
        name=name,
        item_ids=[str(a) for a in raw_items],
        item_texts=texts,
        user_ids=[str(u) for u in users],
        train=train,
        valid=np.array(valid, dtype=np.int64),
        test=np.array(test, dtype=np.int64),
        sequential=False,
        friends={u: sorted(vs) for u, vs in friends.items()},
    )
