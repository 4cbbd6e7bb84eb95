"""The JSON documents fedrec writes and its reports read: ``results.json`` and ``bench_<name>.json``.

One dataclass per document, shared by the writer (:mod:`fedrec.results`, the federated
:class:`~fedrec.federated.server.Coordinator`, ``fedrec bench``) and the reader (``fedrec
report``): a field is named once, here. ``to_json`` gives the JSON object that is written;
``from_json`` reads one back, keeping keys it does not model in ``extra`` (so a document
round-trips unchanged) and renaming the keys of older files through :data:`LEGACY_KEYS`,
the one place that knows them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

#: per benchmark, the keys older ``bench_<name>.json`` rows used for a field, and its name now.
#: ``fedrec report`` of a86cafe accepted a scale row's round time under any of five names
#: (``ROUND_TIME_KEYS``); ``wall_s`` and ``seconds`` were never round times (a row's
#: ``wall_s`` is its whole simulation), so they are not mapped: a row without ``round_s``
#: has no round time.
LEGACY_KEYS: dict[str, dict[str, str]] = {
    "scale": {"round_wall_s": "round_s", "round_seconds": "round_s"},
    "round": {"round_wall_s": "round_s", "first_round_wall_s": "first_round_s"},  # its summary, before 2026-12-04
}


def _split(cls: type, doc: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(known fields, the rest)`` of a JSON object for dataclass ``cls`` (its ``extra`` excluded)."""
    names = {f.name for f in fields(cls)} - {"extra"}
    return {k: v for k, v in doc.items() if k in names}, {k: v for k, v in doc.items() if k not in names}


def _json(obj: Any, always: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of a document dataclass in declaration order, None ones left out unless in ``always``."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        if f.name == "extra":
            continue
        v = getattr(obj, f.name)
        if v is not None or f.name in always:
            out[f.name] = v.to_json() if hasattr(v, "to_json") else v
    return out


@dataclass
class FederationSummary:
    """``results.json``'s ``federation``: how a federated run went, round by round.

    Attributes
    ----------
    aggregation : str
        ``federation.aggregation``.
    rounds : int
        Rounds run.
    run_key : str
        Names the clients' state folders (their local reports).
    best_round : int or None
        The round with the lowest cross-platform validation loss.
    adapter_bytes, backbone_bytes : int
        Size of the shared state and of the frozen backbone.
    adapter_to_backbone : float or None
        Their ratio.
    mean_round_seconds : float or None
        Mean wall time of a round.
    rejected : int
        Client updates rejected over the run.
    history : list of dict
        One entry per round (platforms, cross-platform loss, seconds, rejected, ...).
    initial : dict or None
        The initial state's validation (``federation.evaluate_initial``).
    simulation_seconds, invocation_seconds : float, optional
        Set by ``fedrec simulate``: the simulation, and the whole command.
    extra : dict
        Keys this class does not model.
    """

    aggregation: str = ""
    rounds: int = 0
    run_key: str = ""
    best_round: int | None = None
    adapter_bytes: int = 0
    backbone_bytes: int = 0
    adapter_to_backbone: float | None = None
    mean_round_seconds: float | None = None
    rejected: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    initial: dict[str, Any] | None = None
    simulation_seconds: float | None = None
    invocation_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    #: written as null when unset
    ALWAYS: ClassVar[tuple[str, ...]] = ("best_round", "adapter_to_backbone", "mean_round_seconds", "initial")

    def to_json(self) -> dict[str, Any]:
        """The JSON object."""
        return {**_json(self, self.ALWAYS), **self.extra}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> FederationSummary:
        """Read the JSON object."""
        known, extra = _split(cls, doc)
        return cls(**known, extra=extra)


@dataclass
class ResultsDocument:
    """``results.json``: what every command writes into its run directory.

    Attributes
    ----------
    command : str
        ``train``, ``baselines``, ``simulate``, ``deploy``, ``audit``.
    config : dict
        The resolved configuration.
    platforms : dict
        Per platform, its results (``{"valid": metrics, "test": metrics}``, or per model).
    seconds : float
        Wall time of the command (rounded to 10 ms).
    mode : str, optional
        ``fedrec train``'s mode.
    cross_platform_loss : float or None
        The weighted validation loss over the platforms (None where there is none).
    training : dict, optional
        ``fedrec train``'s training report.
    federation : FederationSummary, optional
        A federated run's rounds.
    privacy : dict, optional
        Privacy spent per platform (a federated run writes null without DP).
    clients : dict, optional
        With user shards: every client's own results.
    audit : dict, optional
        ``fedrec audit``'s report.
    comparison : dict, optional
        ``fedrec simulate``: local-only models, transfer matrix and baselines.
    joint_model : dict, optional
        ``fedrec simulate``: where the joint model went (or why it was skipped).
    extra : dict
        Keys this class does not model (kept when a document is read and written again).
    """

    command: str
    config: dict[str, Any]
    platforms: dict[str, Any]
    seconds: float = 0.0
    mode: str | None = None
    cross_platform_loss: float | None = None
    training: dict[str, Any] | None = None
    federation: FederationSummary | None = None
    privacy: dict[str, Any] | None = None
    clients: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None
    comparison: dict[str, Any] | None = None
    joint_model: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object (``command``, ``config``, ``platforms`` first; unset optional fields left out)."""
        federated = ("privacy",) if self.federation is not None else ()  # null there without DP
        out = _json(self, ("cross_platform_loss", *federated))
        head = {k: out.pop(k) for k in ("command", "config", "platforms")}
        seconds = out.pop("seconds")
        tail: dict[str, Any] = {k: out.pop(k) for k in ("comparison", "joint_model") if k in out}  # added later
        return {**head, **out, **self.extra, "seconds": seconds, **tail}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ResultsDocument:
        """Read the JSON object."""
        known, extra = _split(cls, doc)
        known.setdefault("command", "")
        known.setdefault("seconds", math.nan)  # a document without it: unknown, not 0
        known["config"] = dict(known.get("config") or {})
        known["platforms"] = dict(known.get("platforms") or {})
        fed = known.pop("federation", None)
        return cls(**known, federation=None if fed is None else FederationSummary.from_json(fed), extra=extra)


@dataclass
class BenchDocument:
    """``bench_<name>.json``: what every ``fedrec bench`` benchmark writes.

    Attributes
    ----------
    benchmark : str
        ``train``, ``seqtrain``, ``encode``, ``comm``, ``round`` or ``scale``.
    smoke : bool
        A ``--smoke`` run (tiny random model): not a measurement.
    machine : dict
        The machine it ran on (``fedrec.cli.bench.common.machine_info``).
    settings : dict
        What was measured.
    rows : list of dict
        One per setting (a scale row's round time is ``round_s``).
    summary : dict
        The headline figures.
    seconds : float
        Wall time of the benchmark.
    argv : list of str
        The command line.
    extra : dict
        Keys this class does not model (``latency`` of ``encode``).
    """

    benchmark: str
    smoke: bool
    machine: dict[str, Any]
    settings: dict[str, Any]
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    seconds: float = 0.0
    argv: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object."""
        return {**_json(self), **self.extra}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], name: str | None = None) -> BenchDocument:
        """Read the JSON object; rows and a summary written under a legacy key (:data:`LEGACY_KEYS`) get today's.

        Raises
        ------
        ValueError
            If ``settings``, ``rows`` or ``summary`` is missing or of the wrong type.

        Parameters
        ----------
        doc : mapping
            The JSON object.
        name : str, optional
            The benchmark (default: the document's ``benchmark``).
        """
        known, extra = _split(cls, doc)
        missing = [
            k for k in ("settings", "rows", "summary") if not isinstance(known.get(k), list if k == "rows" else dict)
        ]
        if missing:
            raise ValueError(f"not a bench document: no {', '.join(missing)}")
        known.setdefault("benchmark", name or "")
        known.setdefault("smoke", False)
        known["machine"] = dict(known.get("machine") or {})
        legacy = LEGACY_KEYS.get(str(known["benchmark"]), {})
        known["rows"] = [_renamed(r, legacy) for r in known.get("rows") or []]
        known["summary"] = _renamed(known.get("summary") or {}, legacy)
        return cls(**known, extra=extra)


def _renamed(row: Mapping[str, Any], legacy: Mapping[str, str]) -> dict[str, Any]:
    """``row`` with each legacy key renamed (a key already present under today's name wins)."""
    out = {k: v for k, v in row.items() if k not in legacy}
    for old, new in legacy.items():
        if old in row:
            out.setdefault(new, row[old])
    return out


def read_results(path: str | Path) -> ResultsDocument:
    """Read a ``results.json`` file.

    Raises
    ------
    OSError, ValueError
        If it cannot be read or is not JSON.
    """
    return ResultsDocument.from_json(json.loads(Path(path).read_text()))
