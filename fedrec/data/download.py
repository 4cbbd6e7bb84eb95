"""Fetch the three benchmark datasets and check them against their PROVENANCE.md sums.

Every file is checked against the sha256 sum recorded in the dataset's
``PROVENANCE.md`` (copied into :data:`SHA256` below) before it is written; files
are written atomically (:func:`fedrec.io.atomic_write`: temporary file in the target
folder, then :func:`os.replace`), so an interrupted download never leaves a truncated file
under its final name. Only the standard library is used (and :mod:`fedrec.io`, which uses
only it).

Sources, tried in order for each file still missing:

- ``amazon-office``: ``ysh-1998/LRD`` at the commit named in its PROVENANCE.md,
  ``data/Office/<file>`` via raw.githubusercontent.com.
- ``ml-100k``: the GroupLens archive ``ml-100k.zip``; then the GitHub copy the
  PROVENANCE.md names (``Vickyilango/Boltzmann_Machine`` at ``ee05160``), whose
  bytes the sums were taken from.
- ``lastfm-hetrec2011``: the GroupLens archive ``hetrec2011-lastfm-2k.zip``; then
  the GitHub copy the PROVENANCE.md names (``Coder-Yu/QRec`` at ``734bcdb``).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from fedrec.io import atomic_write

log = logging.getLogger(__name__)

CHUNK = 1 << 16
USER_AGENT = "fedrec-data-download/0.1 (python urllib)"

#: sha256 of every file, exactly as listed in ``<folder>/PROVENANCE.md``.
SHA256: dict[str, dict[str, str]] = {
    "amazon-office": {
        "train.csv": "015236e98589dac0801be8fe16519d95735b2efbd64bec890685297a1bc69fec",
        "dev.csv": "f94b18e4be2f7322905b7fd152bce78e4d554cb7561426fab6855e7df07790a0",
        "test.csv": "5b5fb42bf500ca344d565461706cdb548ebf21b371f3f871d517d8c967e63ed6",
        "item_meta.csv": "dbefb00348f251c56d77687c1b3c369fbb35c3a48cb9fd6de25eca54f19d0c97",
        "Office.text": "34932e3a6cd6b6d9e999608b309cfa5c6811084dc8be77a18ae89de50da7f862",
        "Office.item2index": "4a1d4bb829f89ce23f7f8e6637238a2f9049ca28fed4e73840b36fdba479a046",
    },
    "ml-100k": {
        "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
        "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
        "u.genre": "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb",
        "u.occupation": "cd5fbec9afe345d993a62fc7817df1a4a9079c4feb267b3118763b8fd942137d",
        "u.info": "5b0a40b2e47a729ee6203063f6dcf8790c2e63f5a18663e6ee318a72c5f3c27b",
        "README": "4883b8cf340ed0059971b33f56ad3adc88a40792108ebca3d24aafc4c82e8b52",
    },
    "lastfm-hetrec2011": {
        "artists.dat": "c173881362c6b28551368fecb3c0be5a6a30a6cd859e1f5775413dfe46d48648",
        "tags.dat": "c815d7216101fd0ba9b9c59fa2a011998d2fd076e0064d281ec4153d95ae8095",
        "user_artists.dat": "254272fa721c3935e8be286d28c051b206844307128698ab4eaa41d483379416",
        "user_friends.dat": "0360883a3557776e04fdebda851f2e5dd23e796cad7059b968acdebd528d13fa",
        "user_taggedartists.dat": "c4a9ffae9ab47a9f9b2f0678ab1f7e5c1db4ca818837d8cddd1f5699c5bbf048",
        "readme.txt": "44c38757b3a24e68e844ac60c97ba7fd8e0f691cf1b00e9cf6bd8854df0dd64a",
    },
}

#: Files the loaders read; a file outside this set that cannot be fetched with the
#: right sum is reported as skipped instead of failing the download.
REQUIRED: dict[str, frozenset[str]] = {
    "amazon-office": frozenset({"train.csv", "dev.csv", "test.csv", "Office.text", "Office.item2index"}),
    "ml-100k": frozenset({"u.data", "u.item", "u.genre"}),
    "lastfm-hetrec2011": frozenset(
        {"artists.dat", "tags.dat", "user_artists.dat", "user_friends.dat", "user_taggedartists.dat"}
    ),
}


@dataclass(frozen=True)
class Source:
    """One place a dataset's files can be fetched from.

    Attributes
    ----------
    kind : {"zip", "raw"}
        ``"zip"``: ``url`` is an archive holding the files (matched by base name);
        ``"raw"``: ``url`` is a template with ``{name}``, one request per file.
    url : str
        Archive URL or per-file URL template.
    label : str
        Short human description used in messages.
    """

    kind: Literal["zip", "raw"]
    url: str
    label: str


_LRD = "https://raw.githubusercontent.com/ysh-1998/LRD/ccbd8299c71bb0d26488d67b622706caf9139e21/data/Office/{name}"
_ML_GITHUB = (
    "https://raw.githubusercontent.com/Vickyilango/Boltzmann_Machine/"
    "ee05160966c42d48cc5112caab217e805461db22/ml-100k/{name}"
)
_LASTFM_GITHUB = (
    "https://raw.githubusercontent.com/Coder-Yu/QRec/734bcdb59796020fa0f0825ef8ae85703c774967/dataset/lastfm-2k/{name}"
)

SOURCES: dict[str, tuple[Source, ...]] = {
    "amazon-office": (Source("raw", _LRD, "GitHub ysh-1998/LRD@ccbd829"),),
    "ml-100k": (
        Source("zip", "https://files.grouplens.org/datasets/movielens/ml-100k.zip", "GroupLens archive"),
        Source("raw", _ML_GITHUB, "GitHub Vickyilango/Boltzmann_Machine@ee05160"),
    ),
    "lastfm-hetrec2011": (
        Source("zip", "https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip", "GroupLens archive"),
        Source("raw", _LASTFM_GITHUB, "GitHub Coder-Yu/QRec@734bcdb"),
    ),
}

#: Accepted spellings of each dataset: folder name, platform name, loader name.
ALIASES: dict[str, str] = {
    "amazon-office": "amazon-office",
    "ecommerce": "amazon-office",
    "amazon_office": "amazon-office",
    "ml-100k": "ml-100k",
    "video": "ml-100k",
    "movielens_100k": "ml-100k",
    "lastfm-hetrec2011": "lastfm-hetrec2011",
    "social": "lastfm-hetrec2011",
    "lastfm_hetrec": "lastfm-hetrec2011",
}

_HINT = (
    "Check the internet connection (and any proxy settings) and try again, or instead set FEDREC_DATA "
    "to a folder that already holds the datasets (amazon-office/, ml-100k/, lastfm-hetrec2011/ with the "
    "files their PROVENANCE.md lists), e.g. `export FEDREC_DATA=/path/to/datasets`."
)


class DownloadError(RuntimeError):
    """A dataset file could not be fetched; the message says what, from where, and the alternative."""


class ChecksumError(DownloadError):
    """A fetched file's sha256 differs from PROVENANCE.md; the message names file, expected and actual sum."""


class _FetchFailed(Exception):
    """Internal: one source could not deliver (network error, HTTP error, bad archive, missing member).

    ``unreachable`` is True when the host itself could not be reached (DNS, refused
    connection, timeout), so the other files of that source need not be tried.
    """

    def __init__(self, reason: str, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.unreachable = unreachable


def _resolve(platforms: Iterable[str] | None) -> list[str]:
    if platforms is None:
        return list(SHA256)
    out: list[str] = []
    for p in platforms:
        if p not in ALIASES:
            raise ValueError(f"unknown dataset {p!r}; choose from {sorted(ALIASES)}")
        if ALIASES[p] not in out:
            out.append(ALIASES[p])
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _open_url(url: str, timeout: float) -> IO[bytes]:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        response: IO[bytes] = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise _FetchFailed(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise _FetchFailed(f"{exc.reason}", unreachable=True) from exc
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad status lines
        raise _FetchFailed(f"{type(exc).__name__}: {exc}", unreachable=True) from exc
    return response


def _copy(src: IO[bytes], dst: IO[bytes], read_errors: tuple[type[BaseException], ...]) -> str:
    """Copy ``src`` to ``dst``; return the sha256 of the bytes copied.

    Errors of the types in ``read_errors`` raised while *reading* become
    :class:`_FetchFailed`; errors while writing (local disk) propagate unchanged.
    """
    h = hashlib.sha256()
    while True:
        try:
            chunk = src.read(CHUNK)
        except read_errors as exc:
            raise _FetchFailed(f"{type(exc).__name__}: {exc}") from exc
        if not chunk:
            return h.hexdigest()
        h.update(chunk)
        dst.write(chunk)


_NETWORK_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)
_ARCHIVE_ERRORS: tuple[type[BaseException], ...] = (zipfile.BadZipFile, zlib.error, EOFError)


class _SumMismatch(Exception):
    """The bytes written do not have the expected sum (raised to leave the target untouched)."""

    def __init__(self, actual: str) -> None:
        super().__init__(actual)
        self.actual = actual


def _write_checked(src: IO[bytes], target: Path, expected: str, read_errors: tuple[type[BaseException], ...]) -> str:
    """Stream ``src`` into a temp file next to ``target``; move it into place if its sum is ``expected``.

    Returns the actual sum (the caller compares it with ``expected``); the temp
    file is removed whenever it is not moved into place (:func:`fedrec.io.atomic_write`).
    """

    def write(out: IO[bytes]) -> None:
        actual = _copy(src, out, read_errors)
        if actual != expected:
            raise _SumMismatch(actual)

    try:
        atomic_write(target, write)
    except _SumMismatch as exc:
        return exc.actual
    return expected


def _members_by_name(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Map base name to archive member, ignoring folders and macOS resource forks (shortest path wins)."""
    found: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        parts = info.filename.replace("\\", "/").split("/")
        base = parts[-1]
        if info.is_dir() or not base or base.startswith("._") or "__MACOSX" in parts:
            continue
        if base not in found or len(info.filename) < len(found[base].filename):
            found[base] = info
    return found


def _fetch_from(
    source: Source, folder: str, dest: Path, names: list[str], timeout: float
) -> tuple[dict[str, str], dict[str, str]]:
    """Try one source for ``names``.

    Returns
    -------
    written : dict of str to str
        File name to the URL it was written from (sum verified).
    failed : dict of str to str
        File name to the reason it was not (network error, missing member, or
        ``"sha256 <actual>"`` for a checksum mismatch).
    """
    written: dict[str, str] = {}
    failed: dict[str, str] = {}
    if source.kind == "raw":
        for k, name in enumerate(names):
            url = source.url.format(name=name)
            try:
                with _open_url(url, timeout) as response:
                    actual = _write_checked(response, dest / name, SHA256[folder][name], _NETWORK_ERRORS)
            except _FetchFailed as exc:
                if exc.unreachable:  # do not wait for the same dead host once per file
                    failed.update(dict.fromkeys(names[k:], str(exc)))
                    break
                failed[name] = str(exc)
                continue
            if actual == SHA256[folder][name]:
                written[name] = url
            else:
                failed[name] = f"sha256 {actual}"
        return written, failed
    with tempfile.TemporaryFile() as buffer:
        try:
            with _open_url(source.url, timeout) as response:
                _copy(response, buffer, _NETWORK_ERRORS)
            buffer.seek(0)
            archive = zipfile.ZipFile(buffer)
        except (_FetchFailed, zipfile.BadZipFile) as exc:
            reason = str(exc) if isinstance(exc, _FetchFailed) else f"not a valid zip archive ({exc})"
            return {}, dict.fromkeys(names, reason)
        with archive:
            members = _members_by_name(archive)
            for name in names:
                if name not in members:
                    failed[name] = "not in the archive"
                    continue
                try:
                    with archive.open(members[name]) as member:
                        actual = _write_checked(member, dest / name, SHA256[folder][name], _ARCHIVE_ERRORS)
                except _FetchFailed as exc:
                    failed[name] = f"corrupt archive member ({exc})"
                    continue
                if actual == SHA256[folder][name]:
                    written[name] = f"{source.url}!{members[name].filename}"
                else:
                    failed[name] = f"sha256 {actual}"
    return written, failed


def _download_one(folder: str, root: Path, timeout: float) -> dict[str, str]:
    dest = root / folder
    expected = SHA256[folder]
    status: dict[str, str] = {}
    todo: list[str] = []
    for name, sha in expected.items():
        path = dest / name
        if path.is_file() and _sha256_file(path) == sha:
            status[name] = "ok"
        else:
            todo.append(name)
    if not todo:
        return status
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        _fetch_missing(folder, dest, todo, status, timeout)
    except DownloadError:
        if created and not any(dest.iterdir()):
            dest.rmdir()
        raise
    return {name: status[name] for name in expected if name in status}


def _fetch_missing(folder: str, dest: Path, todo: list[str], status: dict[str, str], timeout: float) -> dict[str, str]:
    expected = SHA256[folder]
    attempts: dict[str, list[tuple[Source, str, str]]] = {name: [] for name in todo}
    for source in SOURCES[folder]:
        if not todo:
            break
        log.info("fetching %s from %s: %s", folder, source.label, ", ".join(todo))
        written, failed = _fetch_from(source, folder, dest, todo, timeout)
        for name, url in written.items():
            status[name] = "downloaded"
            log.info("wrote %s (from %s)", dest / name, url)
        for name, reason in failed.items():
            url = source.url.format(name=name) if source.kind == "raw" else source.url
            attempts[name].append((source, url, reason))
        todo = [n for n in todo if n not in written]
    missing_required = [n for n in todo if n in REQUIRED[folder]]
    if not missing_required:
        for name in todo:
            reasons = "; ".join(f"{url}: {reason}" for _, url, reason in attempts[name])
            status[name] = f"skipped (not needed by the loader; {reasons})"
            log.warning("%s/%s not fetched: %s", folder, name, reasons)
        return status
    mismatched = [n for n in missing_required if any(r.startswith("sha256 ") for _, _, r in attempts[n])]
    if mismatched:
        parts = []
        for name in mismatched:
            got = "; ".join(
                f"got {r.removeprefix('sha256 ')} from {url}" if r.startswith("sha256 ") else f"{url}: {r}"
                for _, url, r in attempts[name]
            )
            parts.append(f"{folder}/{name}: expected sha256 {expected[name]}, {got}")
        raise ChecksumError(
            "Checksum mismatch, so nothing was written for these files: "
            + "; ".join(parts)
            + ". The upstream files differ from the ones PROVENANCE.md describes, so the splits would not be "
            "the protocol's. " + _HINT
        )
    tried: dict[str, None] = {}  # ordered set of "label (url): reason"
    for name in missing_required:
        for source, _url, reason in attempts[name]:
            shown = source.url if source.kind == "zip" else source.url.format(name="<file>")
            tried[f"{source.label} ({shown}): {reason}"] = None
    raise DownloadError(
        f"Could not download the {folder} dataset ({', '.join(missing_required)}) into {dest}; "
        f"tried {'; '.join(tried)}. " + _HINT
    )


def download_datasets(root: Path, platforms: list[str] | None = None, timeout: float = 30) -> dict[str, dict[str, str]]:
    """Download the benchmark datasets that are missing or incomplete under ``root``.

    For each dataset folder (``amazon-office``, ``ml-100k``, ``lastfm-hetrec2011``)
    every file listed in :data:`SHA256` that is absent or has a different sum is
    fetched from :data:`SOURCES` (in order), checked against its sha256 and written
    atomically. Files already present with the right sum are not fetched again.

    Parameters
    ----------
    root : pathlib.Path
        Data root; dataset ``X`` goes to ``root / X`` (created if needed).
    platforms : list of str, optional
        Datasets to fetch, by folder (``"ml-100k"``), platform (``"video"``) or
        loader name (``"movielens_100k"``). Default: all three.
    timeout : float, default 30
        Socket timeout in seconds for each request.

    Returns
    -------
    dict of str to dict of str to str
        Per dataset folder, per file: ``"ok"`` (already present with the right
        sum), ``"downloaded"``, or ``"skipped (...)"`` for a file the loaders do
        not read that no source delivered with the right sum.

    Raises
    ------
    DownloadError
        A file the loader needs could not be fetched (no network, timeout, HTTP
        error); the message names the files, the sources tried, and suggests
        setting ``FEDREC_DATA`` instead.
    ChecksumError
        Every source that delivered a needed file delivered different bytes; the
        message names the file, the expected and the actual sum. Nothing is written
        for that file.
    ValueError
        An unknown dataset name.

    Examples
    --------
    >>> download_datasets(Path("~/fedrec-data").expanduser(), ["video"])  # doctest: +SKIP
    {'ml-100k': {'u.data': 'downloaded', ...}}
    """
    root = Path(root)
    return {folder: _download_one(folder, root, timeout) for folder in _resolve(platforms)}


def verify_datasets(root: Path, platforms: list[str] | None = None) -> dict[str, str]:
    """Check the sha256 of every dataset file under ``root`` against PROVENANCE.md.

    Parameters
    ----------
    root : pathlib.Path
        Data root holding ``amazon-office/``, ``ml-100k/``, ``lastfm-hetrec2011/``.
    platforms : list of str, optional
        Datasets to check (same names as :func:`download_datasets`); default all.

    Returns
    -------
    dict of str to str
        ``"<folder>/<file>"`` to ``"ok"``, ``"missing"``, or
        ``"mismatch: expected <sum>, got <sum>"``.
    """
    root = Path(root)
    report: dict[str, str] = {}
    for folder in _resolve(platforms):
        for name, expected in SHA256[folder].items():
            path = root / folder / name
            if not path.is_file():
                report[f"{folder}/{name}"] = "missing"
                continue
            actual = _sha256_file(path)
            report[f"{folder}/{name}"] = "ok" if actual == expected else f"mismatch: expected {expected}, got {actual}"
    return report


__all__ = [
    "REQUIRED",
    "SHA256",
    "SOURCES",
    "ChecksumError",
    "DownloadError",
    "Source",
    "download_datasets",
    "verify_datasets",
]
