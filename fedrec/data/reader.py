"""Strict delimited-file reading: every malformed row is an error naming file and line."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from fedrec.data.types import DataFormatError, DataMissingError


def require_file(path: Path, how_to_get: str) -> Path:
    """Return ``path`` if it is a file, else raise :class:`DataMissingError`.

    Parameters
    ----------
    path : pathlib.Path
        The file that must exist.
    how_to_get : str
        Sentence telling the user how to obtain it (appended to the message).
    """
    if not path.is_file():
        raise DataMissingError(f"missing data file {path}. {how_to_get}")
    return path


def _decoded_lines(fh: Iterable[str], path: Path, encoding: str) -> Iterator[str]:
    """Yield the lines of ``fh``; turn a decoding failure into a DataFormatError naming the line."""
    try:
        yield from fh
    except UnicodeDecodeError as exc:
        line: int | str = "?"
        with open(path, "rb") as raw:  # the text layer decodes in chunks: find the line in bytes
            for number, data in enumerate(raw, start=1):
                try:
                    data.decode(encoding)
                except UnicodeDecodeError:
                    line = number
                    break
        raise DataFormatError(
            f"{path}:{line}: not valid {encoding} text ({exc.reason}); save the file as {encoding}"
        ) from None


def read_rows(
    path: Path,
    converters: Sequence[Callable[[str], Any]],
    *,
    delimiter: str = "\t",
    header: bool = True,
    encoding: str = "utf-8",
    min_fields: int | None = None,
    quoting: Literal[0, 1, 2, 3] = csv.QUOTE_NONE,
) -> Iterator[tuple[int, list[Any]]]:
    r"""Yield ``(line_number, converted_fields)`` for every data row of a file.

    Parameters
    ----------
    path : pathlib.Path
        File to read.
    converters : sequence of callables
        One converter per leading field (``int``, ``str``, ...); extra fields are
        kept as strings.
    delimiter : str, default "\\t"
        Field separator.
    header : bool, default True
        Skip the first line.
    encoding : str, default "utf-8"
        Text encoding of the file.
    min_fields : int, optional
        Rows with fewer fields are malformed; defaults to ``len(converters)``.
    quoting : int, default csv.QUOTE_NONE
        Quoting mode passed to :func:`csv.reader`.

    Raises
    ------
    DataFormatError
        On a row with too few fields, a field its converter rejects, or bytes the
        encoding cannot decode; the message is ``"<path>:<line>: ..."``.
    """
    need = len(converters) if min_fields is None else min_fields
    with open(path, encoding=encoding, newline="") as fh:
        reader = csv.reader(_decoded_lines(fh, path, encoding), delimiter=delimiter, quoting=quoting)
        for row in reader:
            line = reader.line_num
            if header and line == 1:
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < need:
                raise DataFormatError(
                    f"{path}:{line}: expected {need} {delimiter!r}-separated fields, "
                    f"got {len(row)}: {delimiter.join(row)[:120]!r}"
                )
            out: list[Any] = []
            for i, value in enumerate(row):
                if i < len(converters):
                    try:
                        out.append(converters[i](value))
                    except (TypeError, ValueError) as exc:
                        raise DataFormatError(
                            f"{path}:{line}: field {i + 1} {value[:60]!r} is not a valid "
                            f"{getattr(converters[i], '__name__', 'value')} ({exc})"
                        ) from None
                else:
                    out.append(value)
            yield line, out
