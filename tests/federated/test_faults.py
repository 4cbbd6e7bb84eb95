"""Faults in process: poisoned replies, truncated state files, an unsafe run key (docs/FAULTS.md lists them)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from fedrec.config import compose_config
from fedrec.federated.local import run_local
from fedrec.federated.local_state import LocalStateStore
from fedrec.federated.messages import ClientUpdate
from fedrec.federated.rounds import initial_adapter
from fedrec.federated.server import Coordinator
from fedrec.io import safe_name
from tests.conftest import REPO_ROOT

LOG = "fedrec.federated"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_local_state_falls_back_to_the_last_good_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LocalStateStore(tmp_path / "video")
    states = {r: {"item_emb": torch.full((3, 2), float(r))} for r in (1, 2, 3)}
    for r, s in states.items():
        store.save(r, s)
    store.save(3, {"item_emb": torch.full((3, 2), 33.0)})  # round 3 re-run: the first copy is kept as .prev
    _truncate(store.path(3))
    with caplog.at_level(logging.WARNING, LOG):
        r, state = store.load(3) or (0, {})
    assert r == 3 and torch.equal(state["item_emb"], states[3]["item_emb"])  # round 3's previous good copy
    assert f"{store.path(3)}: truncated" in caplog.text and "recovered the last good copy" in caplog.text
    _truncate(store.path(3).with_name(store.path(3).name + ".prev"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, LOG):
        r, state = store.load(3) or (0, {})
    assert r == 2 and torch.equal(state["item_emb"], states[2]["item_emb"])  # the round before
    assert (
        f"{store.path(3)}: truncated" in caplog.text and f"recovered the last good copy {store.path(2)}" in caplog.text
    )
    for rnd in (1, 2):
        store.path(rnd).write_bytes(b"garbage")
    caplog.clear()
    with caplog.at_level(logging.WARNING, LOG):
        assert store.load(3) is None  # nothing good left: the client starts from its initial local state
    assert "no good copy left" in caplog.text


def _coordinator(tmp_path: Path, *overrides: str) -> tuple[Coordinator, list[tuple[int, str]]]:
    cfg = compose_config(["model=tiny", "platform=[video,ecommerce]", *overrides], config_dir=REPO_ROOT / "conf")
    initial, backbone = initial_adapter(cfg)
    logs: list[tuple[int, str]] = []
    return Coordinator(cfg, tmp_path, initial, backbone, log=lambda lvl, m: logs.append((lvl, m))), logs


def test_a_truncated_checkpoint_resumes_from_the_last_good_copy(tmp_path: Path) -> None:
    co, _ = _coordinator(tmp_path)
    for rnd in (1, 2):
        co.aggregate_train(rnd, [ClientUpdate("1", "video", {k: v + rnd for k, v in co.global_state.items()}, 10)])
        co.end_round(rnd, [], bytes_down=0, seconds=0.0)
    _truncate(co.checkpoint_path)
    again, logs = _coordinator(tmp_path, "federation.resume=true")
    assert again.resume() == 1  # round 2's checkpoint is lost, round 1's good copy is used
    first = next(iter(again.global_state))
    np.testing.assert_allclose(again.global_state[first], co.initial_state[first] + 1, rtol=1e-6)
    (warning,) = [m for lvl, m in logs if lvl == logging.WARNING]
    assert f"{again.checkpoint_path}: truncated" in warning and "recovered the last good copy" in warning


@pytest.mark.parametrize("key", ["../escape", "a/b", "", "x" * 65, "..", "key with space"])
def test_an_unsafe_run_key_is_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match=r"is not a safe folder name: it must match \[A-Za-z0-9_-\]\{1,64\}"):
        safe_name(key, "the run key")
    co, _ = _coordinator(tmp_path)
    co.run_key = key
    co.save_checkpoint()
    again, _ = _coordinator(tmp_path, "federation.resume=true")
    with pytest.raises(ValueError, match="the checkpoint's run key"):
        again.resume()


POISON_ARGS = [
    "model=tiny",
    "train=smoke",
    "platform=video",
    "federation.shards_per_platform=3",
    "federation.rounds=2",
    "federation.local_steps=2",
    "federation.eval_max_users=100",
    "federation.update_norm_bound=1000",
    "federation.max_weight_share=0.5",
]


@pytest.mark.slow
def test_a_1e30_update_and_a_1e12_claim_end_where_the_honest_only_run_ends(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Real clients in process: video/0 scales its update by 1e30, video/1 claims 1e12 examples, video/2 is honest.

    The bound rejects video/0, the cap gives video/1 half the weight: the honest-only run (video/0's
    update never arriving, video/1 reporting its true count) ends at the same adapter.
    """
    real = Coordinator.aggregate_train
    attack = {"on": True}

    def tampered(self: Coordinator, server_round: int, updates: list[ClientUpdate]) -> object:
        out = []
        for u in updates:
            if u.name == "video/0":
                if not attack["on"]:
                    continue  # the honest-only run: its update never arrives
                assert u.state is not None
                u.state = {k: (1e30 * v).astype(v.dtype) for k, v in u.state.items()}
                assert all(np.isfinite(v).all() for v in u.state.values())
            if u.name == "video/1" and attack["on"]:
                u.num_examples = 10**12
            out.append(u)
        return real(self, server_round, out)

    monkeypatch.setattr(Coordinator, "aggregate_train", tampered)
    cfg = compose_config([*POISON_ARGS, f"data.root={data_root}"], config_dir=REPO_ROOT / "conf")
    with caplog.at_level(logging.WARNING, LOG):
        attacked = run_local(cfg, tmp_path / "attacked")
    attack["on"] = False
    honest = run_local(cfg, tmp_path / "honest")
    for h in attacked["federation"]["history"]:
        (rejected,) = h["rejected"]
        assert rejected["client"] == "video/0" and "exceeds federation.update_norm_bound=1000" in rejected["reason"]
        assert set(h["clients"]) == {"video/0", "video/1", "video/2"} and h["clients"]["video/0"]["train"] is None
    assert "capped to 0.5 (federation.max_weight_share=0.5, 1000000000000 examples reported)" in caplog.text
    assert all(h["rejected"] == [] for h in honest["federation"]["history"])
    assert attacked["federation"]["best_round"] == honest["federation"]["best_round"]
    for ha, hb in zip(attacked["federation"]["history"], honest["federation"]["history"], strict=True):
        assert ha["cross_platform_loss"] == pytest.approx(hb["cross_platform_loss"], rel=1e-5)
    for name in ("global_adapter.pt", "best_adapter.pt"):
        a = torch.load(tmp_path / "attacked" / name, weights_only=True)
        b = torch.load(tmp_path / "honest" / name, weights_only=True)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=0.0)
        assert any(not torch.equal(a[k], torch.from_numpy(v)) for k, v in initial_adapter(cfg)[0].items())
