"""The server side of a federated run, without Flower.

:class:`Coordinator` holds the global adapter and everything the server remembers:
it validates and aggregates the clients' updates (rejected ones are excluded with a
logged reason), turns the clients' validation results into the cross-platform loss,
keeps the best round by that loss, writes an atomic checkpoint (global adapter, best
adapter, round, history) and, with ``federation.resume``, continues from it. The
Flower ServerApp (``server/app.py``) only moves messages between it and the clients.

Clients are keyed by name: the platform, or ``<platform>/<shard>`` when
``federation.shards_per_platform`` splits every platform's users into shards; the
per-platform figures then combine the shards (:mod:`fedrec.federated.shards`).
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fedrec.documents import FederationSummary
from fedrec.federated.aggregate import aggregate, check_update, check_weight, state_nbytes
from fedrec.federated.arrays import to_numpy
from fedrec.federated.byzantine import robust_aggregate
from fedrec.federated.checkpoint import CHECKPOINT, describe, load_checkpoint, save_checkpoint
from fedrec.federated.identity import NodeRegistry
from fedrec.federated.messages import ClientEvaluation, ClientUpdate
from fedrec.federated.replies import check_evaluation, is_withheld
from fedrec.federated.robust import aggregation_weights, bound_update, update_norm
from fedrec.federated.secure_sum import train_entry
from fedrec.federated.server_opt import from_config as server_opt_from_config
from fedrec.federated.shards import by_platform, client_names, shards_per_platform
from fedrec.federated.summary import privacy_summary, round_line
from fedrec.federated.supported import check_supported
from fedrec.io import safe_name, save_torch, write_json
from fedrec.results import cross_platform_loss, results_document, write_results

LogFn = Callable[[int, str], None]
MIB = 1024**2


def _std_log(level: int, msg: str) -> None:
    logging.getLogger("fedrec.federated").log(level, msg)


class Coordinator:
    """Global adapter, aggregation, cross-platform loss, best round, checkpoints.

    Parameters
    ----------
    cfg : DictConfig
        The run's resolved config.
    out_dir : path-like
        Run directory (results, adapters; the checkpoint unless
        ``federation.checkpoint_dir`` is set).
    initial : dict
        The initial global adapter (from :func:`initial_adapter`).
    backbone_bytes : int
        Size of the frozen backbone, reported beside the bytes sent.
    log : callable, optional
        ``log(level, message)``; default: the ``fedrec.federated`` logger.
    """

    def __init__(
        self,
        cfg: DictConfig,
        out_dir: str | Path,
        initial: dict[str, np.ndarray],
        backbone_bytes: int,
        log: LogFn | None = None,
    ) -> None:
        check_supported(cfg)
        self.cfg = cfg
        self.fed = cfg.federation
        self.mode = str(self.fed.aggregation)
        self.platforms = list(cfg.platforms)
        self.shards = shards_per_platform(cfg)
        self.clients = client_names(cfg)  # the platforms themselves unless they are split into user shards
        self.out_dir = Path(out_dir)
        ckpt = str(self.fed.checkpoint_dir or "")
        self.ckpt_dir = Path(ckpt).expanduser() if ckpt else self.out_dir / "checkpoint"
        self.log = log or _std_log
        self.identity = NodeRegistry(dict(self.fed.get("nodes", {})), self.clients, self.log)  # who serves what
        self.global_state = {k: np.array(v, copy=True) for k, v in initial.items()}
        self.server_opt = server_opt_from_config(self.fed)  # fedrec.federated.server_opt: none = FedAvg itself
        self.expected = {k: tuple(v.shape) for k, v in initial.items()}
        self.backbone_bytes = backbone_bytes
        self.round = 0
        self.history: list[dict[str, Any]] = []
        self.best_round: int | None = None
        self.best_loss: float | None = None
        self.best_state = {k: np.array(v, copy=True) for k, v in initial.items()}
        self.initial_state = {k: np.array(v, copy=True) for k, v in initial.items()}
        self.initial: dict[str, Any] | None = None  # round 0: the initial adapter's validation (record_initial)
        self.run_key = uuid.uuid4().hex[:12]
        self.seconds_before = 0.0
        self.started = time.perf_counter()
        self.pending: dict[str, Any] = {}

    # -- messages ---------------------------------------------------------------------
    @property
    def min_clients(self) -> int:
        """Clients to wait for and sample each round."""
        return int(self.fed.min_clients) or len(self.clients)

    def message_config(self, split: str = "valid", local_round: int | None = None) -> dict[str, Any]:
        """What every client message carries besides the arrays (the config travels with it)."""
        return {
            "fedrec-config": OmegaConf.to_yaml(self.cfg, resolve=True),
            "run-key": self.run_key,
            "split": split,
            "local-round": -1 if local_round is None else int(local_round),
        }

    # -- resume / checkpoint ----------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        """The checkpoint file."""
        return self.ckpt_dir / CHECKPOINT

    def resume(self) -> int:
        """Load the checkpoint when ``federation.resume`` is on; returns the last completed round.

        Raises
        ------
        ValueError
            If the checkpoint was written with different model, platforms, seed or
            aggregation settings, or does not fit the adapter.
        fedrec.io.CorruptStateError
            If neither the checkpoint nor its last good copy is readable (a corrupt newest
            copy alone is logged and the last good one used).
        """
        if not self.fed.resume:
            return 0
        ck = load_checkpoint(self.checkpoint_path, lambda msg: self.log(logging.WARNING, msg))
        if ck is None:
            self.log(logging.WARNING, f"resume: no checkpoint at {self.checkpoint_path}; starting at round 1")
            return 0
        saved, now = json.loads(ck["describe"]), describe(self.cfg)
        diff = sorted(k for k in set(now) | set(saved) if saved.get(k) != now.get(k))
        if diff:
            raise ValueError(
                f"cannot resume from {self.checkpoint_path}: it was written with different {', '.join(diff)} "
                f"(checkpoint {[saved.get(k) for k in diff]}, now {[now.get(k) for k in diff]})"
            )
        state = to_numpy(ck["global"])
        problem = check_update(state, self.expected)
        if problem:
            raise ValueError(f"cannot resume from {self.checkpoint_path}: {problem}")
        self.global_state = state
        self.best_state = to_numpy(ck["best"])
        self.round = int(ck["round"])
        self.best_round = None if ck["best_round"] < 0 else int(ck["best_round"])
        self.best_loss = None if self.best_round is None else float(ck["best_loss"])
        self.history = json.loads(ck["history"])
        self.initial = json.loads(ck["initial"]) if "initial" in ck else None
        if "server_opt" in ck:
            self.server_opt.load_state_dict(ck["server_opt"])
        self.run_key = safe_name(str(ck["run_key"]), "the checkpoint's run key")
        self.seconds_before = float(ck["seconds"])
        self.log(logging.INFO, f"resuming after round {self.round} from {self.checkpoint_path}")
        return self.round

    def save_checkpoint(self) -> Path:
        """Durably write the checkpoint (global and best adapter, round, history; the last good copy kept)."""
        return save_checkpoint(
            self.checkpoint_path,
            {
                "round": self.round,
                "global": {k: torch.from_numpy(v) for k, v in self.global_state.items()},
                "best": {k: torch.from_numpy(v) for k, v in self.best_state.items()},
                "best_round": -1 if self.best_round is None else self.best_round,
                "best_loss": float("nan") if self.best_loss is None else self.best_loss,
                "history": json.dumps(self.history),
                "initial": json.dumps(self.initial),
                "describe": json.dumps(describe(self.cfg)),
                "run_key": self.run_key,
                "seconds": self.elapsed,
                "server_opt": self.server_opt.state_tensors(),
            },
        )

    @property
    def elapsed(self) -> float:
        """Seconds spent on this run, over all resumes."""
        return self.seconds_before + time.perf_counter() - self.started

    # -- a round ----------------------------------------------------------------------
    def who(self, u: ClientUpdate) -> dict[str, str]:
        """How a history entry names a client: its platform, and its name when platforms are split."""
        return {"platform": u.platform, "client": u.name} if self.shards > 1 else {"platform": u.platform}

    def aggregate_train(self, server_round: int, updates: Sequence[ClientUpdate]) -> dict[str, np.ndarray] | None:
        """Validate the updates, aggregate the accepted ones into the new global adapter.

        A rejected update (decode failure, wrong names or shapes, non-finite values,
        unusable example count, a change from the global adapter over
        ``federation.update_norm_bound`` with ``update_norm_action=reject``) is excluded
        and logged with its reason; the round goes on with the others. An update over
        the bound with ``clip`` is scaled onto it (logged, listed under ``clipped``). Each
        client's weight share is capped at ``federation.max_weight_share``. With no
        accepted update the global adapter is unchanged.

        Returns
        -------
        dict or None
            The new global adapter, or None if nothing was accepted.
        """
        started = time.perf_counter()
        accepted: list[ClientUpdate] = []
        rejected: list[dict[str, str]] = []
        refused: list[dict[str, Any]] = []
        clipped: list[dict[str, str]] = []
        norms: dict[str, float] = {}  # each update's L2 change from the global adapter, as received
        updates, impostors = self.identity.screen(f"round {server_round}", updates)  # fedrec.federated.identity
        rejected += [{**self.who(u), "node": u.node, "reason": why} for u, why in impostors]
        for u in sorted(updates, key=lambda x: (x.name, x.node)):
            if u.refused is not None:  # the client's own decision (privacy budget), not a faulty update
                refused.append({**self.who(u), "node": u.node, "reason": u.refused, **u.metrics})
                self.log(logging.WARNING, f"round {server_round}: {u.name} did not train: {u.refused}")
                continue
            reason = u.problem
            if reason is None and u.state is None:
                reason = "no arrays in the reply"
            if reason is None:
                assert u.state is not None
                reason = check_update(u.state, self.expected) or check_weight(u.num_examples)
            if reason is None:  # the update norm bound (fedrec.federated.robust): reject or clip
                reason = self._bound(server_round, u, clipped, norms)
            if reason is None:
                accepted.append(u)
            else:
                rejected.append({**self.who(u), "node": u.node, "reason": reason})
                self.log(
                    logging.WARNING,
                    f"round {server_round}: rejected the update of {u.name} (node {u.node}): {reason}",
                )
        self.pending = {
            "train": {u.name: {**train_entry(u), "update_norm": norms[u.name]} for u in accepted},
            "rejected": rejected,
            "refused": refused,
            "clipped": clipped,
        }
        if not accepted:
            self.pending["aggregate_seconds"] = time.perf_counter() - started
            self.log(logging.WARNING, f"round {server_round}: no accepted update; the global adapter is unchanged")
            return None
        states = [u.state for u in accepted if u.state is not None]
        if str(self.fed.get("robust", "none")) == "none":
            merged = aggregate(self.mode, states, self.weights(accepted))
        else:  # fedrec.federated.byzantine: median, trimmed mean or Krum (example counts ignored)
            fed = self.fed
            merged, note = robust_aggregate(
                str(fed.robust), states, float(fed.robust_trim_fraction), int(fed.robust_byzantine)
            )
            self.log(logging.INFO, f"round {server_round}: {note} ({', '.join(u.name for u in accepted)})")
        self.global_state = self.server_opt.step(server_round, self.global_state, merged)
        self.pending["aggregate_seconds"] = time.perf_counter() - started
        return self.global_state

    def _bound(
        self, server_round: int, u: ClientUpdate, clipped: list[dict[str, str]], norms: dict[str, float]
    ) -> str | None:
        """Apply ``federation.update_norm_bound`` to an update: why it is rejected, or None (maybe clipped)."""
        assert u.state is not None
        norms[u.name] = update_norm(u.state, self.global_state)
        bound, action = float(self.fed.get("update_norm_bound", 0.0)), str(self.fed.get("update_norm_action", "reject"))
        state, note = bound_update(u.state, self.global_state, bound, action)
        if state is None:
            return note
        if note is not None:
            u.state = state
            clipped.append({**self.who(u), "node": u.node, "reason": note})
            self.log(logging.WARNING, f"round {server_round}: clipped the update of {u.name} (node {u.node}): {note}")
        return None

    def weights(self, accepted: Sequence[ClientUpdate]) -> list[float]:
        """The accepted updates' aggregation weights (:func:`fedrec.federated.robust.aggregation_weights`)."""
        return aggregation_weights(self.fed, accepted, self.log)

    def screen_evaluations(self, when: str, evaluations: Sequence[ClientEvaluation]) -> list[ClientEvaluation]:
        """The usable evaluation replies; each unusable one is logged with its reason and ignored.

        Unusable: a missing or non-numeric metric, NaN or infinite values, no users, a rank
        metric outside [0, 1] (:func:`fedrec.federated.replies.check_evaluation`).
        """
        kept = []
        evaluations, _ = self.identity.screen(when, evaluations)  # logged there
        for e in evaluations:
            reason = check_evaluation(e.metrics)
            if reason is None:
                kept.append(e)
            else:
                self.log(logging.WARNING, f"{when}: ignored the evaluation of {e.name} (node {e.node}): {reason}")
        return kept

    def validation(
        self, server_round: int, evaluations: Sequence[ClientEvaluation]
    ) -> tuple[dict[str, Any], dict[str, Any], float | None]:
        """The clients' validation metrics in a round, per platform, and their cross-platform loss.

        With user shards (``federation.shards_per_platform`` > 1) a platform's metrics
        combine its shards' (:func:`fedrec.federated.shards.by_platform`).

        Returns
        -------
        tuple
            ``({client: metrics}, {platform: metrics}, loss)``; the loss is None (and a
            warning logged) when a client did not report.
        """
        evaluations = self.screen_evaluations(f"round {server_round}", evaluations)
        client_valid: dict[str, Any] = {e.name: e.metrics for e in sorted(evaluations, key=lambda e: e.name)}
        withheld = sorted(name for name, m in client_valid.items() if is_withheld(m))
        if withheld:  # DP clients send no data-dependent validation (fedrec.federated.replies)
            self.log(logging.INFO, f"round {server_round}: {withheld} withheld validation (DP); no cross-platform loss")
            return client_valid, client_valid, None
        valid = client_valid
        if self.shards > 1:
            valid = by_platform(client_valid, self.platforms, evaluation=True)
        if set(client_valid) != set(self.clients):
            missing = sorted(set(self.clients) - set(client_valid))
            self.log(logging.WARNING, f"round {server_round}: no validation result from {missing}")
            return client_valid, valid, None
        xloss = cross_platform_loss(
            {p: valid[p]["loss"] for p in self.platforms},
            {p: int(valid[p].get("users", 1)) for p in self.platforms},
            str(self.cfg.eval.loss_weights),
        )
        return client_valid, valid, xloss

    def end_round(
        self, server_round: int, evaluations: Sequence[ClientEvaluation], bytes_down: int, seconds: float
    ) -> dict[str, Any]:
        """Record the round: per-platform metrics, cross-platform loss, best round, checkpoint.

        Parameters
        ----------
        server_round : int
            The round just finished.
        evaluations : sequence of ClientEvaluation
            The clients' validation results on the new global adapter.
        bytes_down : int
            Bytes of the adapter arrays one client received in this round (train + evaluate).
        seconds : float
            Wall time of the round.

        Returns
        -------
        dict
            The round's history entry.
        """
        client_valid, valid, xloss = self.validation(server_round, evaluations)
        client_train: dict[str, Any] = self.pending.get("train", {})
        train = client_train
        if self.shards > 1:  # per platform over its shards (fedrec.federated.shards says how)
            train = by_platform(client_train, self.platforms, evaluation=False)
        up = [t["bytes_up"] for t in client_train.values()]
        entry: dict[str, Any] = {
            "round": server_round,
            "cross_platform_loss": xloss,
            "platforms": {p: {"train": train.get(p), "valid": valid.get(p)} for p in self.platforms},
        }
        if self.shards > 1:
            entry["clients"] = {c: {"train": client_train.get(c), "valid": client_valid.get(c)} for c in self.clients}
        entry |= {
            "rejected": self.pending.get("rejected", []),
            "refused": self.pending.get("refused", []),
            "clipped": self.pending.get("clipped", []),
            **{k: self.pending[k] for k in ("secure_aggregation",) if k in self.pending},  # SecAgg+: who, the mean
            "bytes": {
                "down_per_client": bytes_down,
                "up_per_client": max(up) if up else 0,
                "total": bytes_down * (len(client_valid) or len(client_train)) + sum(up),
            },
            "seconds": round(seconds, 2),
            # server time in aggregate_train: validating and aggregating the updates
            "aggregate_seconds": round(float(self.pending.get("aggregate_seconds", 0.0)), 6),
        }
        self.history.append(entry)
        self.round = server_round
        if xloss is None and any(is_withheld(e.metrics) for e in evaluations):
            # no validation under DP: the joint model is the latest round's adapter
            self.best_round = server_round
            self.best_state = {k: np.array(v, copy=True) for k, v in self.global_state.items()}
        elif xloss is not None and math.isfinite(xloss) and (self.best_loss is None or xloss < self.best_loss):
            self.best_round, self.best_loss = server_round, xloss
            self.best_state = {k: np.array(v, copy=True) for k, v in self.global_state.items()}
        self.pending = {}
        if server_round % int(self.fed.checkpoint_every) == 0 or server_round >= int(self.fed.rounds):
            self.save_checkpoint()
            write_json(self.out_dir / "history.json", self.history)
        self.log(logging.INFO, round_line(entry, int(self.fed.rounds), self.best_round))
        return entry

    def record_initial(self, evaluations: Sequence[ClientEvaluation], seconds: float) -> dict[str, Any]:
        """Record round 0: the clients' validation results on the initial adapter, before any training.

        The starting point of the cross-platform loss curve (rounds-to-quality measures
        the improvement from it); it never competes for the best round.

        Parameters
        ----------
        evaluations : sequence of ClientEvaluation
            The clients' validation results on :attr:`initial_state`.
        seconds : float
            Wall time of the evaluation.

        Returns
        -------
        dict
            ``{"round": 0, "cross_platform_loss", "platforms", "seconds"}`` (also :attr:`initial`).
        """
        _, valid, xloss = self.validation(0, evaluations)
        self.initial = {"round": 0, "cross_platform_loss": xloss, "platforms": valid, "seconds": round(seconds, 2)}
        shown = "n/a" if xloss is None else f"{xloss:.4f}"
        self.log(logging.INFO, f"round 0 (initial adapter, before training): xloss {shown} | {seconds:.1f}s")
        return self.initial

    # -- the end ----------------------------------------------------------------------
    def finish(self, command: str, test: Sequence[ClientEvaluation]) -> dict[str, Any]:
        """Write ``best_adapter.pt``, ``global_adapter.pt`` and the results document.

        Parameters
        ----------
        command : str
            ``"simulate"`` or ``"deploy"`` (recorded in the document).
        test : sequence of ClientEvaluation
            The clients' test results with the best round's adapter.

        Returns
        -------
        dict
            The ``results.json`` document (also written to ``out_dir / cfg.output``).
        """
        save_torch(self.out_dir / "global_adapter.pt", {k: torch.from_numpy(v) for k, v in self.global_state.items()})
        save_torch(self.out_dir / "best_adapter.pt", {k: torch.from_numpy(v) for k, v in self.best_state.items()})
        test = self.screen_evaluations("test", test)
        client_test = {e.name: e.metrics for e in sorted(test, key=lambda e: e.name)}
        platforms = {p: {"test": m} for p, m in client_test.items()}
        extra: dict[str, Any] = {}
        if self.shards > 1:  # per platform over its shards (user-weighted), and every client's own
            combined = by_platform(client_test, self.platforms, evaluation=True)
            platforms = {p: {"test": m} for p, m in combined.items() if m is not None}
            extra["clients"] = {c: {"test": m} for c, m in client_test.items()}
        adapter = state_nbytes(self.global_state)
        rounds = [h for h in self.history]
        doc = results_document(
            command,
            self.cfg,
            platforms,
            self.elapsed,
            cross_platform_loss=self.best_loss,
            federation=FederationSummary(
                aggregation=self.mode,
                rounds=self.round,
                run_key=self.run_key,  # names the clients' state folders (their local reports)
                best_round=self.best_round,
                adapter_bytes=adapter,
                backbone_bytes=self.backbone_bytes,
                adapter_to_backbone=adapter / self.backbone_bytes if self.backbone_bytes else None,
                mean_round_seconds=float(np.mean([h["seconds"] for h in rounds])) if rounds else None,
                rejected=sum(len(h["rejected"]) for h in rounds),
                history=self.history,
                initial=self.initial,
            ),
            privacy=privacy_summary(self.cfg, self.history),
            **extra,
        )
        write_results(self.out_dir, str(self.cfg.output), doc)
        return doc.to_json()
