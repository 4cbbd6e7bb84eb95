"""A DP client's ledger on real data: the node's, keyed by the data, surviving restarts and runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrec.federated.client import PlatformClient
from fedrec.federated.replies import WITHHELD, LocalReport
from fedrec.federated.rounds import initial_adapter
from fedrec.privacy import epsilon_of
from tests.conftest import ComposeCfg

pytestmark = pytest.mark.slow

SIGMA = 0.8


#: one DP platform (on the tiny model)
RUN = (
    "command=simulate",
    "platform=video",
    "privacy=dp",
    f"privacy.noise_multiplier={SIGMA}",
    "federation.local_epochs=0.05",
    "federation.eval_max_users=50",
)


def test_the_ledger_survives_restarts_and_new_runs_a_deleted_one_is_refused(
    compose_cfg: ComposeCfg, tmp_path: Path
) -> None:
    cfg = compose_cfg(*RUN)
    ledgers = tmp_path / "node" / "privacy"
    first = PlatformClient(cfg, "video", tmp_path / "node" / "run1" / "video", ledger_dir=ledgers)
    initial, _ = initial_adapter(cfg)
    q = 16 / 943  # train=smoke: 16 users per step of the 943
    steps = round(0.05 / q)
    out = first.train(initial, 1)
    assert out.refused is None and out.metrics["epsilon"] == pytest.approx(epsilon_of([(SIGMA, q, steps)], 1e-5))
    # a restart: a new client object over the same folders (a fresh process holds nothing else)
    restarted = PlatformClient(cfg, "video", first.store.folder, ledger_dir=ledgers, parts=first.parts)
    out = restarted.train(initial, 2)
    assert out.metrics["epsilon"] == pytest.approx(epsilon_of([(SIGMA, q, 2 * steps)], 1e-5))
    # a second run on the same data (another run folder, other training settings) starts from the first's epsilon
    cfg2 = compose_cfg(*RUN, "train.lr=5e-3", "federation.local_epochs=0.1", "federation.rounds=2")
    second = PlatformClient(cfg2, "video", tmp_path / "node" / "run2" / "video", ledger_dir=ledgers, parts=first.parts)
    assert second.fingerprint == first.fingerprint
    out = second.train(initial, 1)
    both = [(SIGMA, q, 2 * steps), (SIGMA, q, round(0.1 / q))]
    assert out.metrics["epsilon"] == pytest.approx(epsilon_of(both, 1e-5))
    assert out.ledger is not None and out.ledger["steps"] == 2 * steps + round(0.1 / q)
    # the evaluation reply withholds the metrics; the platform's local report keeps them
    reply = second.evaluation_reply(out.state, "valid", 1, 50)
    assert reply == {WITHHELD: 1}
    kept = LocalReport(second.store.folder).read()["valid"]["1"]
    assert kept["users"] == 50 and 0 <= kept["NDCG@10"] <= 1
    # the ledger deleted (both copies): refused with a reason, nothing trained, nothing written in its place
    path = second.ledger_path
    for p in (path, path.with_name(path.name + ".prev")):
        p.unlink()
    out = second.train(initial, 2)
    assert out.refused is not None and "missing" in out.refused and "not be trained on again from zero" in out.refused
    assert out.state == {} and out.num_examples == 0 and not path.exists()
