"""Loader counts, item texts and the friend graph, checked against PROTOCOL.md and the raw files."""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest

from fedrec.data import PlatformData, load_platform

# PROTOCOL.md: "Counts that a correct loader reproduces"
PROTOCOL_COUNTS = {
    "ecommerce": (4_905, 2_420, 53_258),
    "video": (943, 1_682, 100_000),
    "social": (1_883, 17_632, 92_824),
}


def _tsv(path: Path, encoding: str = "utf-8", header: bool = True) -> list[list[str]]:
    lines = path.read_text(encoding=encoding).splitlines()
    return [ln.split("\t") for ln in lines[1 if header else 0 :] if ln]


@pytest.mark.parametrize("name", sorted(PROTOCOL_COUNTS))
def test_counts_match_protocol(platforms: dict[str, PlatformData], name: str) -> None:
    data = platforms[name]
    assert (data.num_users, data.num_items, data.num_interactions) == PROTOCOL_COUNTS[name]
    assert data.name == name
    assert len(set(data.user_ids)) == data.num_users
    assert len(set(data.item_ids)) == data.num_items
    assert all(len(t) >= 1 for t in data.train)  # every evaluated user has >= 3 interactions
    for arr in (*data.train, data.valid, data.test):
        assert ((0 <= arr) & (arr < data.num_items)).all()


def test_sequential_flags(platforms: dict[str, PlatformData]) -> None:
    assert platforms["ecommerce"].sequential and platforms["video"].sequential
    assert not platforms["social"].sequential  # play counts, not time


# ---------------------------------------------------------------- video


def test_video_text_known_movies(video: PlatformData) -> None:
    text = dict(zip(video.item_ids, video.item_texts, strict=True))
    assert text["1"] == "Toy Story (1995) | genres: Animation, Children's, Comedy"
    # u.item is latin-1: a mis-decoded file would give 'MisÃ©rables'
    assert text["543"] == "Misérables, Les (1995) | genres: Drama, Musical"
    assert text["1633"] == "Á köldum klaka (Cold Fever) (1994) | genres: Comedy, Drama"
    assert text["267"] == "unknown | genres: unknown"


def test_video_texts_follow_u_item(video: PlatformData, data_root: Path) -> None:
    folder = data_root / "ml-100k"
    genres = [g.split("|")[0] for g in (folder / "u.genre").read_text(encoding="latin-1").splitlines() if g]
    assert len(genres) == 19
    expected = {}
    for line in (folder / "u.item").read_text(encoding="latin-1").splitlines():
        f = line.split("|")
        names = [g for g, flag in zip(genres, f[5:24], strict=True) if flag == "1"]
        expected[f[0]] = f"{f[1]} | genres: {', '.join(names)}"
    assert dict(zip(video.item_ids, video.item_texts, strict=True)) == expected
    assert video.item_ids == sorted(video.item_ids, key=int)


# ---------------------------------------------------------------- social


def _expected_lastfm_texts(folder: Path) -> dict[str, str]:
    names = {r[0]: html.unescape(r[1]) for r in _tsv(folder / "artists.dat")}
    tags = {r[0]: r[1] for r in _tsv(folder / "tags.dat", encoding="latin-1")}
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for r in _tsv(folder / "user_taggedartists.dat"):
        counts[r[1]][r[2]] += 1
    out = {}
    for artist in {r[1] for r in _tsv(folder / "user_artists.dat")}:
        top = sorted(counts[artist].items(), key=lambda kv: (-kv[1], int(kv[0])))[:5]
        out[artist] = f"{names[artist]} | tags: {', '.join(tags[t] for t, _ in top)}" if top else names[artist]
    return out


def test_social_texts(social: PlatformData, data_root: Path) -> None:
    got = dict(zip(social.item_ids, social.item_texts, strict=True))
    assert got == _expected_lastfm_texts(data_root / "lastfm-hetrec2011")
    assert got["89"] == "Lady Gaga | tags: pop, dance, electronic, female vocalists, lady gaga"
    assert got["10003"] == "aho"  # listened to, never tagged: the name alone
    # PROVENANCE.md: 12,133 of the 17,632 listened artists have at least one tag
    assert sum(" | tags: " in t for t in social.item_texts) == 12_133


def _write_tsv(path: Path, header: str, rows: Sequence[tuple[object, ...]], encoding: str = "utf-8") -> None:
    path.write_text(header + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows), encoding=encoding)


def test_social_loader_on_small_synthetic_folder(tmp_path: Path) -> None:
    """HTML unescaping, the 5-tag cap with ties by tag id, dropped users and friend symmetry."""
    _write_tsv(
        tmp_path / "artists.dat",
        "id\tname\turl\tpictureURL",
        [
            (1, "Simon &amp; Garfunkel", "u", "p"),
            (2, "Beyonc&eacute;", "u", "p"),
            (3, "Plain", "u", "p"),
            (4, "Four", "u", "p"),
        ],
    )
    _write_tsv(
        tmp_path / "tags.dat",
        "tagID\ttagValue",
        [(t, f"tag{t}") for t in range(1, 8)] + [(8, "café")],
        encoding="latin-1",
    )
    # artist 1: tag 7 x3, tags 2,5,1,6,3 x1 each (ties broken by tag id), tag 4 never -> "tag7, tag1, tag2, tag3, tag5"
    tagged = [(9, 1, 7, 1, 1, 2010)] * 3 + [(9, 1, t, 1, 1, 2010) for t in (2, 5, 1, 6, 3)] + [(9, 2, 8, 1, 1, 2010)]
    _write_tsv(tmp_path / "user_taggedartists.dat", "userID\tartistID\ttagID\tday\tmonth\tyear", tagged)
    _write_tsv(
        tmp_path / "user_artists.dat",
        "userID\tartistID\tweight",
        [(10, 1, 5), (10, 2, 50), (10, 3, 7), (10, 4, 7), (20, 1, 1), (20, 2, 2), (20, 3, 3), (30, 1, 9), (30, 2, 9)],
    )
    # directed edges only one way; user 30 (2 artists) is not evaluated; 40 is unknown; 10-10 is a self loop
    _write_tsv(tmp_path / "user_friends.dat", "userID\tfriendID", [(10, 20), (10, 30), (40, 10), (10, 10)])
    data = load_platform("lastfm_hetrec", tmp_path, "social")
    text = dict(zip(data.item_ids, data.item_texts, strict=True))
    assert text["1"] == "Simon & Garfunkel | tags: tag7, tag1, tag2, tag3, tag5"
    assert text["2"] == "Beyoncé | tags: café"
    assert text["3"] == "Plain" and text["4"] == "Four"
    assert data.user_ids == ["10", "20"]
    assert data.friends == {0: [1], 1: [0]}
    # user 10: sha1 order of "10:<artist>" is 1, 2, 4, 3 -> test 1, valid 2; train 3 and 4 tie at 7 plays,
    # so (play count, artist id) gives [3, 4] while the hash order would give [4, 3]
    ids = data.item_ids
    assert (ids[data.test[0]], ids[data.valid[0]], [ids[i] for i in data.train[0]]) == ("1", "2", ["3", "4"])
    # user 20: sha1 order 3, 2, 1
    assert (ids[data.test[1]], ids[data.valid[1]], [ids[i] for i in data.train[1]]) == ("3", "2", ["1"])


def test_social_friend_graph(social: PlatformData, data_root: Path) -> None:
    friends = social.friends
    assert friends is not None
    n = social.num_users
    edges = set()
    for u, vs in friends.items():
        assert 0 <= u < n
        assert vs == sorted(set(vs)), "neighbour lists are sorted and duplicate-free"
        for v in vs:
            assert 0 <= v < n and v != u
            assert u in friends[v], f"edge {u}->{v} has no reverse"
            edges.add((min(u, v), max(u, v)))
    # independently: undirected edges of user_friends.dat between evaluated users only
    evaluated = set(social.user_ids)
    raw = {tuple(sorted((int(a), int(b)))) for a, b in _tsv(data_root / "lastfm-hetrec2011" / "user_friends.dat")}
    assert len(raw) == 12_717  # PROVENANCE.md
    index = {u: i for i, u in enumerate(social.user_ids)}
    expected = {
        tuple(sorted((index[str(a)], index[str(b)]))) for a, b in raw if str(a) in evaluated and str(b) in evaluated
    }
    assert edges == expected
    assert len(expected) < len(raw), "edges of the 9 dropped users must be gone"


def test_non_social_platforms_have_no_graph(ecommerce: PlatformData, video: PlatformData) -> None:
    assert ecommerce.friends is None and video.friends is None


# ---------------------------------------------------------------- ecommerce


def test_ecommerce_texts_joined_through_item2index(ecommerce: PlatformData, data_root: Path) -> None:
    folder = data_root / "amazon-office"
    asin_text = {r[0]: r[1] for r in _tsv(folder / "Office.text")}
    expected = {r[1]: asin_text[r[0]] for r in _tsv(folder / "Office.item2index", header=False)}
    assert dict(zip(ecommerce.item_ids, ecommerce.item_texts, strict=True)) == expected
    assert ecommerce.item_ids == sorted(ecommerce.item_ids, key=int)
    assert all(t.strip() for t in ecommerce.item_texts)
