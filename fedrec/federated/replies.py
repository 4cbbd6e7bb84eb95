"""What a client's replies carry out of its platform, and the local report that stays inside.

In a non-private run a client reports everything (train loss, timings, validation and
test metrics). In a DP run -- the run config has ``privacy.enabled``, or the node has its
own caps (:class:`fedrec.privacy.NodeCaps`), whatever the run says -- only what the DP
guarantee covers leaves the platform:

* training replies: the noised adapter and :data:`PUBLIC_TRAIN_KEYS`, each a function of
  the run's configuration and the platform's user count (treated as public: it fixes the
  sampling rate; docs/PRIVACY.md). Not the training loss (raw data, no noise), nor the
  seconds it took (a side channel of how many users Poisson sampling drew);
* evaluation replies: nothing but ``withheld`` (:data:`WITHHELD`). The client scores the
  model all the same and writes the metrics into its own :class:`LocalReport` (its state
  folder, inside the platform); the server picks the latest round's adapter instead of
  the best-validating one. In simulation the operator, who plays every platform, reads
  the reports back into ``results.json`` (:func:`merge_local_reports`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedrec.io import safe_name, write_json
from fedrec.metrics import EXTRA_METRICS, METRICS

#: the numeric training metrics a DP client may send (besides its adapter)
PUBLIC_TRAIN_KEYS = ("num-examples", "steps", "epsilon", "delta", "noise_multiplier", "max_grad_norm", "sample_rate")
#: a DP client's evaluation reply: its metrics stayed in its local report
WITHHELD = "withheld"
#: the metrics an evaluation reply carries in a non-private run
EVAL_KEYS = ("loss", *METRICS, *EXTRA_METRICS)
#: the sequence model's test replies also carry its shared part's metrics, and with a prior the
#: unblended personal model's, under these prefixes (and the blend weight, ``prior-weight``)
SHARED_PREFIX, PERSONAL_PREFIX = "shared-", "personal-"
EXTRA_KEYS = (SHARED_PREFIX, PERSONAL_PREFIX, "prior-weight")
REPORT = "evaluation.json"


def train_metrics(
    num_examples: int,
    loss: float,
    steps: int,
    seconds: float,
    setup_seconds: float,
    public: Mapping[str, float],
    private: bool,
) -> dict[str, float | int]:
    """The numeric metrics of a training reply.

    Parameters
    ----------
    num_examples, loss, steps, seconds : number
        The local round's (``num_examples`` is the expected count under DP).
    setup_seconds : float
        Time spent building the platform's task in this process.
    public : mapping
        The DP round's public metrics (``PrivateFitResult.public_metrics``; empty without DP).
    private : bool
        A DP run (or a node with caps): keep only :data:`PUBLIC_TRAIN_KEYS`.
    """
    out: dict[str, float | int] = {
        "num-examples": int(num_examples),
        "train-loss": float(loss),
        "steps": int(steps),
        "train-seconds": float(seconds),
        "setup-seconds": float(setup_seconds),
        **{k: float(v) for k, v in public.items()},
    }
    if private:
        out = {k: v for k, v in out.items() if k in PUBLIC_TRAIN_KEYS}
    return out


def evaluation_metrics(
    metrics: Mapping[str, Any], seconds: float, setup_seconds: float, private: bool
) -> dict[str, float | int]:
    """The numeric metrics of an evaluation reply: the scores, or only ``withheld`` in a DP run.

    Parameters
    ----------
    metrics : mapping
        :meth:`fedrec.task.PlatformTask.evaluate` output (``users`` and :data:`EVAL_KEYS`).
    seconds, setup_seconds : float
        The evaluation's compute and the task's build time in this process.
    private : bool
        A DP run (or a node with caps).
    """
    if private:
        return {WITHHELD: 1}
    out: dict[str, float | int] = {k: float(metrics[k]) for k in EVAL_KEYS}
    out.update({k: float(v) for k, v in metrics.items() if k.startswith(EXTRA_KEYS)})  # seqrec: the parts' metrics
    out.update({"num-examples": int(metrics["users"]), "users": int(metrics["users"])})
    out["eval-seconds"] = float(seconds)  # the client's evaluation compute
    out["setup-seconds"] = float(setup_seconds)  # building this platform's task in this process (0 when cached)
    return out


def is_withheld(metrics: Mapping[str, Any]) -> bool:
    """Whether an evaluation reply withheld its metrics (a DP client)."""
    return bool(metrics.get(WITHHELD))


#: the metrics the server needs from a (non-withheld) evaluation reply; the rank metrics lie in [0, 1]
REQUIRED_EVAL_KEYS = ("loss", "users", *METRICS)


def check_evaluation(metrics: Mapping[str, Any]) -> str | None:
    """Why an evaluation reply is unusable, or None (a withheld DP reply is usable).

    Parameters
    ----------
    metrics : mapping
        The reply's metrics.

    Returns
    -------
    str or None
        The first problem: a missing or non-numeric metric, a non-finite value, no
        evaluated users, a rank metric outside [0, 1].
    """
    if is_withheld(metrics):
        return None
    for key in REQUIRED_EVAL_KEYS:
        if key not in metrics:
            return f"metric {key!r} is missing"
        value = metrics[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"metric {key!r} is {value!r}, not a number"
        if not math.isfinite(value):
            return f"metric {key!r} is {value}"
    if metrics["users"] < 1:
        return f"it scored {metrics['users']} users"
    outside = [k for k in REQUIRED_EVAL_KEYS[2:] if not 0.0 <= metrics[k] <= 1.0]
    if outside:
        return f"metric {outside[0]!r} is {metrics[outside[0]]}, outside [0, 1]"
    return None


class LocalReport:
    """A client's evaluation results inside its platform: ``<state dir>/evaluation.json``.

    Holds ``{"valid": {round: metrics}, "test": {round: metrics}}`` for one run (the state
    dir is per run and client); written atomically after every evaluation.

    Parameters
    ----------
    folder : path-like
        The client's state folder.
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / REPORT

    def read(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The report so far (empty splits if none was written)."""
        if not self.path.is_file():
            return {"valid": {}, "test": {}}
        return json.loads(self.path.read_text())

    def record(self, split: str, local_round: int, metrics: Mapping[str, Any]) -> Path:
        """Add (or replace) the metrics of ``split`` with the adapter of ``local_round``."""
        doc = self.read()
        doc.setdefault(split, {})[str(int(local_round))] = {k: _plain(v) for k, v in metrics.items()}
        return write_json(self.path, doc)


def _plain(value: Any) -> Any:
    """A JSON value: ints and strings as they are, other numbers (NumPy's too) as float."""
    return value if isinstance(value, int | str) else float(value)


def local_report(state_root: str | Path, run_key: str, client: str) -> LocalReport:
    """The :class:`LocalReport` of ``client`` in run ``run_key`` under a simulation's state folder.

    The folder layout is ``<state_root>/<run key>/<client>`` (the run key checked by
    :func:`fedrec.io.safe_name`).
    """
    return LocalReport(Path(state_root) / safe_name(str(run_key), "the run key") / client)


def merge_local_reports(doc: dict[str, Any], state_root: str | Path) -> dict[str, Any]:
    """Fill a results document's withheld test metrics from the platforms' local reports (simulation only).

    Only the operator of a simulation, who runs every platform's client on this machine,
    may do this: it reads each client's :class:`LocalReport` under
    ``<state_root>/<run key>/<client>``. Each filled platform gets ``test_source`` (the
    report's path); the document gets ``evaluation`` saying where the numbers come from.

    Parameters
    ----------
    doc : dict
        A federated results document (``federation.run_key``, ``federation.best_round``).
    state_root : path-like
        The simulation's client state folder (``federation.client_state_dir``).

    Returns
    -------
    dict
        ``doc``, updated in place.

    Raises
    ------
    ValueError
        If a platform withheld its test metrics and its local report has none.
    """
    fed = doc.get("federation", {})
    withheld = [p for p, rec in doc.get("platforms", {}).items() if is_withheld(rec.get("test") or {})]
    if not withheld:
        return doc
    best = str(fed.get("best_round"))
    for name in withheld:
        report = local_report(state_root, fed["run_key"], name)
        tests = report.read().get("test", {})
        if not tests:
            raise ValueError(f"platform {name} withheld its test metrics and {report.path} has none")
        doc["platforms"][name]["test"] = tests.get(best) or tests[max(tests, key=int)]
        doc["platforms"][name]["test_source"] = str(report.path)
    doc["evaluation"] = (
        "withheld from the server (DP run); test metrics read by the operator from each platform's local report "
        "(platforms.<name>.test_source)"
    )
    return doc
