"""The federated loop, once: its initial state, its run config, and how it reaches clients.

:func:`run_rounds` drives a :class:`~fedrec.federated.server.Coordinator` through a
:class:`Transport` (Flower's grid in ``server/app.py``, or in process in
:mod:`fedrec.federated.local`): resume, then per round train, aggregate and validate, then
test the best round's state.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fedrec.federated.arrays import to_numpy
from fedrec.federated.messages import ClientEvaluation
from fedrec.federated.supported import check_supported
from fedrec.results import METRIC_KEYS

if TYPE_CHECKING:
    from fedrec.federated.server import Coordinator


def initial_adapter(cfg: DictConfig) -> tuple[dict[str, np.ndarray], int]:
    """The shared initial state (seeded) and the frozen backbone's size in bytes.

    Builds the encoder the clients build (``cfg.model``, ``cfg.seed``), with LoRA A
    frozen for ``ffa`` so that the adapter holds exactly what crosses the wire; with the
    sequence model, the state is its shared part (:func:`fedrec.seqrec.build.initial_state`).
    """
    from fedrec.build import build_encoder
    from fedrec.seqrec.build import initial_state, is_seqrec

    encoder, _ = build_encoder(cfg.model, cfg.seed)
    if cfg.federation.aggregation == "ffa":
        encoder.freeze_lora_a()
    backbone = sum(p.numel() * p.element_size() for n, p in encoder.named_parameters() if "lora_" not in n)
    if is_seqrec(cfg):
        return initial_state(cfg, encoder), int(backbone)
    return to_numpy(encoder.adapter_state()), int(backbone)


def summary_rows(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, float]]]:
    """``(platform, model, test metrics)`` rows of a federated results document."""
    label = f"fed-{doc['federation']['aggregation']}@r{doc['federation']['best_round']}"
    return [(p, label, v["test"]) for p, v in doc["platforms"].items() if all(k in v["test"] for k in METRIC_KEYS)]


def prepare_run_config(cfg: DictConfig, out_dir: str | Path) -> DictConfig:
    """The resolved config a simulation hands to its apps: absolute paths, run-local folders.

    ``data.root`` and ``data.cache_dir`` become absolute (the simulation's workers may
    run elsewhere); an empty ``federation.checkpoint_dir`` / ``client_state_dir`` becomes
    ``<out_dir>/checkpoint`` / ``<out_dir>/client_state``.
    """
    check_supported(cfg)
    out_dir = Path(out_dir).resolve()
    c = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    c.data.root = str(Path(c.data.root).expanduser().resolve())
    c.data.cache_dir = str(Path(c.data.cache_dir).expanduser().resolve())
    fed = c.federation
    fed.checkpoint_dir = (
        str(Path(fed.checkpoint_dir).expanduser().resolve()) if fed.checkpoint_dir else str(out_dir / "checkpoint")
    )
    fed.client_state_dir = (
        str(Path(fed.client_state_dir).expanduser().resolve())
        if fed.client_state_dir
        else str(out_dir / "client_state")
    )
    return c  # type: ignore[return-value]  # a DictConfig built from one


class Transport(Protocol):
    """How a :class:`Coordinator` reaches its clients (Flower's grid, or in-process)."""

    def train_round(self, server_round: int, co: Coordinator) -> int:
        """Send the global adapter out for training and have ``co`` aggregate the replies.

        Returns the adapter bytes one client received.
        """

    def evaluate_round(
        self, server_round: int, co: Coordinator, state: dict[str, np.ndarray], split: str
    ) -> tuple[list[ClientEvaluation], int]:
        """Have every client score ``state`` on ``split``; returns the results and the bytes one client received."""


def run_rounds(co: Coordinator, transport: Transport, command: str) -> dict[str, Any]:
    """The federated loop: resume, train/aggregate/evaluate each round, test the best adapter.

    With ``federation.evaluate_initial`` the initial adapter is first scored on every
    client's validation split (round 0, :meth:`Coordinator.record_initial`), once per run:
    a resumed run keeps the checkpoint's.

    Parameters
    ----------
    co : Coordinator
        The server's memory (resumes from its checkpoint when ``federation.resume``).
    transport : Transport
        Reaches the clients.
    command : str
        Recorded in the results document.

    Returns
    -------
    dict
        The results document (also written to the run directory).
    """
    done = co.resume()
    if co.fed.get("evaluate_initial", False) and co.initial is None:
        start = time.perf_counter()
        evaluations, _ = transport.evaluate_round(0, co, co.initial_state, "valid")
        co.record_initial(evaluations, time.perf_counter() - start)
    for rnd in range(done + 1, int(co.fed.rounds) + 1):
        start = time.perf_counter()
        down = transport.train_round(rnd, co)
        evaluations, down_eval = transport.evaluate_round(rnd, co, co.global_state, "valid")
        co.end_round(rnd, evaluations, down + down_eval, time.perf_counter() - start)
    best = co.best_round or co.round
    tests, _ = transport.evaluate_round(best, co, co.best_state, "test")
    doc = co.finish(command, tests)
    co.log(
        logging.INFO,
        f"best round {best} (cross-platform loss {co.best_loss}); results: {co.out_dir / str(co.cfg.output)}",
    )
    return doc
