"""The custom CSV platform, and malformed or missing files for custom and real-format loaders."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from fedrec.data import DataFormatError, DataMissingError, load_platform

ITEMS = "\n".join(
    [
        "item,text",
        'i1,"Stapler, heavy duty"',
        "i2,Paper",
        "i3,Pen",
        'i4,"Ink ""black"""',
        "i5,Never bought",
        "",
    ]
)
INTERACTIONS = """user,item,timestamp
alice,i1,10
alice,i3,20
alice,i2,20
alice,i4,30
bob,i2,5.5
bob,i1,1e1
bob,i3,7
carol,i1,1
carol,i2,2
"""
FRIENDS = """user,friend
alice,bob
bob,alice
carol,alice
alice,alice
"""


def _write(folder: Path, items: str = ITEMS, interactions: str = INTERACTIONS, friends: str | None = FRIENDS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.csv").write_text(items, encoding="utf-8")
    (folder / "interactions.csv").write_text(interactions, encoding="utf-8")
    if friends is not None:
        (folder / "friends.csv").write_text(friends, encoding="utf-8")
    return folder


def _replace_line(text: str, line: int, new: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[line - 1] = new + "\n"
    return "".join(lines)


def test_custom_split(tmp_path: Path) -> None:
    data = load_platform("custom", _write(tmp_path), "shop")
    assert data.name == "shop" and data.sequential
    assert data.item_ids == ["i1", "i2", "i3", "i4", "i5"]
    assert data.item_texts[0] == "Stapler, heavy duty"  # quoted comma kept inside the field
    assert data.item_texts[3] == 'Ink "black"'
    assert data.user_ids == ["alice", "bob"]  # carol has 2 interactions: not evaluated
    ids = data.item_ids
    split = {
        u: ([ids[i] for i in data.train[k]], ids[data.valid[k]], ids[data.test[k]]) for k, u in enumerate(data.user_ids)
    }
    # alice: i3 and i2 share timestamp 20 -> item id breaks the tie: i1, i2 | i3 | i4
    assert split["alice"] == (["i1", "i2"], "i3", "i4")
    # bob: timestamps are numbers (5.5 < 7 < 1e1), not strings
    assert split["bob"] == (["i2"], "i3", "i1")
    assert data.num_interactions == 7
    assert list(data.history(0, "test")) == [0, 1, 2]
    # friends: symmetric, self loops and non-evaluated users (carol) dropped
    assert data.friends == {0: [1], 1: [0]}


def test_custom_without_friends(tmp_path: Path) -> None:
    data = load_platform("custom", _write(tmp_path, friends=None), "shop")
    assert data.friends is None


@pytest.mark.parametrize(
    ("file", "line", "new", "message"),
    [
        ("interactions.csv", 3, "alice,i3", "expected 3"),
        ("interactions.csv", 3, "alice,i3,yesterday", "'yesterday'"),
        ("interactions.csv", 3, "alice,i3,nan", "finite"),
        ("interactions.csv", 4, "alice,i9,20", "'i9' is not in items.csv"),
        ("interactions.csv", 5, "alice,i4,30,5", "expected 3 comma-separated fields"),
        ("items.csv", 3, "i2,Paper, A4", "quote"),
        ("items.csv", 4, "i1,Pen again", "listed twice"),
        ("items.csv", 6, "i5,  ", "empty text"),
        ("items.csv", 2, "i1", "expected 2"),
        ("friends.csv", 3, "bob", "expected 2"),
    ],
)
def test_custom_malformed_rows(tmp_path: Path, file: str, line: int, new: str, message: str) -> None:
    texts = {"items.csv": ITEMS, "interactions.csv": INTERACTIONS, "friends.csv": FRIENDS}
    texts[file] = _replace_line(texts[file], line, new)
    _write(tmp_path, texts["items.csv"], texts["interactions.csv"], texts["friends.csv"])
    with pytest.raises(DataFormatError) as err:
        load_platform("custom", tmp_path, "shop")
    msg = str(err.value)
    assert f"{file}:{line}:" in msg
    assert message in msg


def test_custom_wrong_encoding_names_the_line(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / "items.csv").write_bytes(ITEMS.replace("Pen", "Stylo caf\xe9").encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"items\.csv:4: not valid utf-8"):
        load_platform("custom", tmp_path, "shop")


@pytest.mark.parametrize("missing", ["interactions.csv", "items.csv"])
def test_custom_missing_file(tmp_path: Path, missing: str) -> None:
    _write(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(DataMissingError) as err:
        load_platform("custom", tmp_path, "shop")
    msg = str(err.value)
    assert missing in msg
    assert "interactions.csv (user,item,timestamp)" in msg and "items.csv (item,text)" in msg


# ------------------------------------------------- real-format loaders on corrupted copies

REAL_FILES = {
    "ml-100k": ("movielens_100k", ["u.data", "u.item", "u.genre"]),
    "lastfm-hetrec2011": (
        "lastfm_hetrec",
        ["artists.dat", "tags.dat", "user_artists.dat", "user_friends.dat", "user_taggedartists.dat"],
    ),
    "amazon-office": ("amazon_office", ["train.csv", "dev.csv", "test.csv", "Office.text", "Office.item2index"]),
}


def _copy_real(data_root: Path, folder: str, dest: Path) -> Path:
    dest.mkdir()
    for name in REAL_FILES[folder][1]:
        shutil.copyfile(data_root / folder / name, dest / name)
    return dest


def _corrupt(path: Path, line: int, edit: Callable[[str], str], encoding: str = "utf-8") -> None:
    lines = path.read_text(encoding=encoding).splitlines(keepends=True)
    lines[line - 1] = edit(lines[line - 1].rstrip("\n")) + "\n"
    path.write_text("".join(lines), encoding=encoding)


@pytest.mark.parametrize(
    ("folder", "file", "line", "edit", "message"),
    [
        ("ml-100k", "u.data", 500, lambda s: "x" + s, "field 1"),
        ("ml-100k", "u.data", 1234, lambda s: "\t".join(s.split("\t")[:2]), "expected 4"),
        (
            "ml-100k",
            "u.data",
            77,
            lambda s: "\t".join([s.split("\t")[0], "99999", *s.split("\t")[2:]]),
            "item 99999 is not in u.item",
        ),
        ("ml-100k", "u.item", 10, lambda s: s[:-1] + "2", "genre flags"),
        ("ml-100k", "u.item", 20, lambda s: s[:40], "expected 24"),
        ("lastfm-hetrec2011", "user_artists.dat", 1000, lambda s: s + "x", "field 3"),
        (
            "lastfm-hetrec2011",
            "user_taggedartists.dat",
            321,
            lambda s: "\t".join([*s.split("\t")[:2], "999999", *s.split("\t")[3:]]),
            "tag 999999 is not in tags.dat",
        ),
        ("amazon-office", "test.csv", 42, lambda s: "21" + s[s.index("\t") :], "user 21 appears twice"),
        ("amazon-office", "Office.item2index", 7, lambda s: "NOSUCHASIN\t7", "has no text"),
    ],
)
def test_real_loader_names_file_and_line(
    data_root: Path, tmp_path: Path, folder: str, file: str, line: int, edit: Callable[[str], str], message: str
) -> None:
    dest = _copy_real(data_root, folder, tmp_path / folder)
    encoding = "latin-1" if file == "u.item" else "utf-8"
    _corrupt(dest / file, line, edit, encoding)
    with pytest.raises(DataFormatError) as err:
        load_platform(REAL_FILES[folder][0], dest, "p")
    msg = str(err.value)
    assert f"{file}:{line}:" in msg
    assert message in msg


@pytest.mark.parametrize("folder", sorted(REAL_FILES))
def test_real_loader_missing_file_says_how_to_get_it(data_root: Path, tmp_path: Path, folder: str) -> None:
    dest = _copy_real(data_root, folder, tmp_path / folder)
    gone = REAL_FILES[folder][1][-1]
    (dest / gone).unlink()
    with pytest.raises(DataMissingError) as err:
        load_platform(REAL_FILES[folder][0], dest, "p")
    msg = str(err.value)
    assert gone in msg
    assert "fedrec data download" in msg and "FEDREC_DATA" in msg
