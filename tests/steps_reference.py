"""Every trainer run for a few seeded steps: what :mod:`tests.test_steps` compares bit for bit.

Imports only the trainers' public entry points (no :mod:`fedrec.steps`), so the same code
records the reference from the loops before the refactor::

    git archive 33b69d2 fedrec | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base:. python -c "from tests.steps_reference import main; main()"
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable

import numpy as np
import torch

from fedrec.privacy import count_users, plan_private, train_private
from fedrec.seqrec.private import train_shared_private
from fedrec.train import fit
from tests.privacy.conftest import make_task
from tests.seqrec.conftest import make_seq_task


def digest(named: list[tuple[str, torch.Tensor]]) -> str:
    """sha256 of the tensors' names and bytes, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(named, key=lambda x: x[0]):
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def _two_tower_fit() -> tuple[str, float]:
    task = make_task()
    r = fit([task], epochs=2, batch_size=8, num_negatives=5, index_refresh_steps=3, max_steps=7, seed=3, progress=False)
    return digest([(n, p) for n, p in task.model.named_parameters() if p.requires_grad]), r.loss[task.name]


def _two_tower_private() -> tuple[str, float]:
    task = make_task()
    plan = plan_private(count_users(task), 8, steps_per_round=5, noise_multiplier=0.5, max_grad_norm=1.0)
    r = train_private(task, plan, lr=1e-2, num_negatives=5, index_refresh_steps=2, seed=3, progress=False)
    return digest([(n, p) for n, p in task.model.named_parameters() if p.requires_grad]), r.loss[task.name]


def _seq_shared(adapter: bool) -> Callable[[], tuple[str, float]]:
    def run() -> tuple[str, float]:
        task = make_seq_task(adapter=adapter)
        params = list(task.shared.parameters())
        if adapter:
            params += [p for p in task.text.encoder.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=1e-2)
        stats = task.train_shared(opt, 1.5, 8, np.random.default_rng(3))
        named = [(f"shared.{n}", p) for n, p in task.shared.named_parameters()]
        named += [(f"adapter.{n}", p) for n, p in task.text.encoder.named_parameters() if p.requires_grad]
        return digest(named + [("index", task.text.index())]), stats.loss

    return run


def _seq_personal() -> tuple[str, float]:
    task = make_seq_task()
    rng = np.random.default_rng(3)
    task.personalize(1, 8, 1e-2, rng)
    stats = task.personalize(1, 8, 1e-2, rng, resume=True)
    assert task.personal is not None
    return digest(list(task.personal.named_parameters())), stats.loss


def _seq_private() -> tuple[str, float]:
    task = make_seq_task()
    plan = plan_private(len(task.trainable_users), 8, steps_per_round=5, noise_multiplier=0.5, max_grad_norm=1.0)
    opt = torch.optim.Adam(task.shared.parameters(), lr=1e-2)
    r = train_shared_private(task, plan, opt, seed=3)
    return digest(list(task.shared.named_parameters())), r.loss[task.name]


TRAINERS: dict[str, Callable[[], tuple[str, float]]] = {
    "fit": _two_tower_fit,
    "train_private": _two_tower_private,
    "train_shared": _seq_shared(False),
    "train_shared adapter": _seq_shared(True),
    "personalize": _seq_personal,
    "train_shared_private": _seq_private,
}


def fingerprint() -> str:
    """The torch build and CPU kernels the reference depends on."""
    return (
        f"torch {torch.__version__}, cpu {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}"
    )


def trained() -> dict[str, tuple[str, float]]:
    """``{trainer: (parameter digest, reported loss)}`` after each trainer's seeded steps."""
    return {name: run() for name, run in TRAINERS.items()}


def main() -> None:
    """Print the fingerprint and :func:`trained` as JSON (to paste into ``tests/test_steps.py``)."""
    import fedrec

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        print(json.dumps({"fedrec": fedrec.__file__, "fingerprint": fingerprint(), "reference": trained()}, indent=1))
