"""A platform's side of the federation: shared state in and out, local parts kept, personal model fit on valid."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from fedrec.seqrec.platform import SeqPlatform
from fedrec.seqrec.task import SeqTask
from tests.conftest import ComposeCfg


def test_the_shared_state_round_trips_and_local_parts_stay(make_task: Callable[..., SeqTask]) -> None:
    a = SeqPlatform(make_task(seed=0), local_parts=["adaptor"])
    b = SeqPlatform(make_task(seed=1), local_parts=["adaptor"])
    own = b.shared_state()
    b.load_shared(a.shared_state())
    now = b.shared_state()
    for k, v in now.items():
        expected = own[k] if k.startswith("shared.adaptor.") else a.shared_state()[k]
        np.testing.assert_array_equal(v, expected)
    b.load_shared(a.shared_state(), include_local=True)
    np.testing.assert_array_equal(b.shared_state()["shared.adaptor.weight"], a.shared_state()["shared.adaptor.weight"])


def test_a_bad_state_is_refused_naming_the_tensor(make_task: Callable[..., SeqTask]) -> None:
    p = SeqPlatform(make_task())
    state = p.shared_state()
    state["shared.adaptor.weight"] = state["shared.adaptor.weight"][:, :3]
    with pytest.raises(ValueError, match="shared.adaptor.weight"):
        p.load_shared(state)
    del state["shared.adaptor.weight"]
    with pytest.raises(ValueError, match="missing"):
        p.load_shared(state)


def test_the_adapter_travels_when_it_is_trained(make_task: Callable[..., SeqTask]) -> None:
    p = SeqPlatform(make_task(adapter=True))
    names = p.shared_state()
    assert any(k.startswith("adapter.") and "lora_" in k for k in names)
    before = {k: v.copy() for k, v in names.items() if k.startswith("adapter.") and "lora_B" in k}
    p.train(epochs=2, batch_size=8, seed=0)
    after = p.shared_state()
    assert any(not np.array_equal(before[k], after[k]) for k in before)


def test_training_resumes_from_the_local_state(make_task: Callable[..., SeqTask]) -> None:
    p = SeqPlatform(make_task(), local_parts=["adaptor"])
    p.train(epochs=1, batch_size=8, seed=0)
    saved, shared = p.local_state(), p.shared_state()
    q = SeqPlatform(make_task(seed=5), local_parts=["adaptor"])
    q.load_shared(shared)
    q.load_local_state(saved)
    for k, v in q.shared_state().items():
        np.testing.assert_array_equal(v, shared[k])  # the local adaptor came back from the local state
    assert q.optimizer.state_dict()["state"]  # Adam's moments carried over


def test_finalize_keeps_the_best_validation_epoch(make_task: Callable[..., SeqTask]) -> None:
    p = SeqPlatform(make_task())
    p.train(epochs=3, batch_size=8, seed=0)
    out = p.finalize(epochs=4, batch_size=8, lr=1e-2, seed=0, eval_every=2)
    assert out["epochs"] in (2, 4)
    assert p.task.evaluate("valid", "personal")["NDCG@10"] == pytest.approx(out["valid"])
    assert "personal" in p.local_state()


def test_the_shared_state_is_a_snapshot_not_a_view(make_task: Callable[..., SeqTask]) -> None:
    p = SeqPlatform(make_task())
    before = p.shared_state()
    kept = {k: v.copy() for k, v in before.items()}
    p.load_shared({k: v + 1.0 for k, v in before.items()})  # the parameters change in place
    for k, v in before.items():
        np.testing.assert_array_equal(v, kept[k])


@pytest.mark.parametrize(("patience", "trained", "chosen"), [(1, 3, 2), (2, 4, 4), (0, 4, 4)])
def test_finalize_stops_after_patience_validations_without_a_better_one(
    make_task: Callable[..., SeqTask], monkeypatch: pytest.MonkeyPatch, patience: int, trained: int, chosen: int
) -> None:
    p = SeqPlatform(make_task())
    scripted = iter([0.1, 0.3, 0.2, 0.4])  # validation NDCG@10 after epochs 1, 2, 3, 4
    calls: list[int] = []

    def evaluate(split: str, which: str = "personal", **kw: object) -> dict[str, float]:
        calls.append(1)
        return {"NDCG@10": next(scripted)}

    monkeypatch.setattr(p.task, "evaluate", evaluate)
    out = p.finalize(epochs=4, batch_size=8, lr=1e-2, seed=0, eval_every=1, patience=patience)
    assert (out["trained"], out["epochs"], len(calls)) == (trained, chosen, trained)
    assert out["valid"] == {2: 0.3, 4: 0.4}[chosen]


def test_the_shared_parts_learning_rate_under_dp_is_privacy_lr(compose_cfg: ComposeCfg) -> None:
    from fedrec.seqrec.build import shared_lr

    assert shared_lr(compose_cfg(model="seqrec_tiny")) == compose_cfg(model="seqrec_tiny").model.seq.lr
    dp = compose_cfg("privacy=target_eps", "privacy.lr=0.02", "command=simulate", model="seqrec_tiny")
    assert shared_lr(dp) == 0.02
    assert shared_lr(compose_cfg("privacy.lr=0.02", model="seqrec_tiny")) != 0.02  # privacy off: the model's
    with pytest.raises(ValueError, match="privacy.lr must be >= 0"):
        compose_cfg("privacy=target_eps", "privacy.lr=-1", "command=simulate", model="seqrec_tiny")
