"""A node's ledgers: keyed by data, surviving restarts and runs, refusing to restart a lost ledger from zero."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from fedrec.io import read_durable
from fedrec.privacy import LedgerError, LedgerStore, NodeCaps, epsilon_of

FP = "a" * 64  # a platform's training data
OTHER = "b" * 64  # other data of the same platform
ROUND = (1.0, 0.05, 20)  # (noise multiplier, sample rate, steps)


def _charge(store: LedgerStore, rounds: int, fp: str = FP, platform: str = "video", **kw) -> float:
    """``rounds`` rounds, each in a fresh process's view of the folder (a new store and ledger every round)."""
    eps = 0.0
    for r in range(rounds):
        ledger = LedgerStore(store.folder).open(platform, fp, **kw)
        eps = ledger.charge(*ROUND, round_id=r + 1)
    return eps


def _eps(rounds: int) -> float:
    return epsilon_of([(ROUND[0], ROUND[1], rounds * ROUND[2])], 1e-5)


def test_restarts_and_a_second_run_on_the_same_data_add_to_one_ledger(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "privacy")
    assert _charge(store, 2) == pytest.approx(_eps(2))  # run 1: two rounds, a restart between them
    run2 = store.open("video", FP)  # run 2 (another run key, another model: same data)
    assert run2.steps == 40 and run2.epsilon() == pytest.approx(_eps(2))
    assert run2.charge(*ROUND, round_id=1) == pytest.approx(_eps(3))
    assert store.entries()[f"video:{FP}"]["steps"] == 60 and store.entries()[f"video:{FP}"]["platform"] == "video"
    # other data of the same platform is another ledger, starting at zero; a third platform's too
    assert store.open("video", OTHER).steps == 0 and store.open("social", FP).steps == 0
    assert store.spent("video") == {FP: pytest.approx(_eps(3)), OTHER: 0.0}


def test_another_accountant_or_delta_reports_the_same_history(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path)
    _charge(store, 2)
    prv = store.open("video", FP, delta=1e-6, accountant="prv")
    assert prv.steps == 40 and prv.epsilon() == pytest.approx(epsilon_of([(1.0, 0.05, 40)], 1e-6, "prv"))


def test_a_deleted_ledger_is_refused_not_restarted(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path)
    _charge(store, 2)
    path = store.ledger_path("video", FP)
    path.unlink()
    path.with_name(path.name + ".prev").unlink()
    with pytest.raises(LedgerError, match=r"missing.*registry says it charged 40 steps.*not be trained on again"):
        store.open("video", FP)
    assert not path.exists()  # nothing was written in its place


def test_a_corrupt_ledger_and_its_last_good_copy_are_refused(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path)
    _charge(store, 2)
    path = store.ledger_path("video", FP)
    for p in (path, path.with_name(path.name + ".prev")):
        p.write_bytes(p.read_bytes()[:-5])  # truncated
    with pytest.raises(LedgerError, match="unreadable.*truncated.*registry says it charged 40 steps"):
        store.open("video", FP)


def test_a_corrupt_ledger_recovers_its_last_good_copy_and_the_registry_restores_the_lost_charge(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LedgerStore(tmp_path)
    _charge(store, 3)
    path = store.ledger_path("video", FP)
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF  # one flipped byte: the checksum fails, the .prev copy (2 rounds) is taken
    path.write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING, logger="fedrec.privacy"):
        ledger = store.open("video", FP)
    assert ledger.steps == 60 and ledger.epsilon() == pytest.approx(_eps(3))  # not the .prev copy's 40
    assert "checksum mismatch; recovered the last good copy" in caplog.text
    assert "20 steps behind the node registry" in caplog.text
    saved = json.loads(read_durable(path) or b"")  # repaired on disk, the repair noted in its rounds
    assert saved["steps"] == 60 and saved["rounds"][-1]["restored_from"] == "node registry"


def test_a_missing_newest_copy_falls_back_to_prev(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = LedgerStore(tmp_path)
    _charge(store, 2)
    store.ledger_path("video", FP).unlink()  # only the newest copy: .prev remains
    with caplog.at_level(logging.WARNING, logger="fedrec.privacy"):
        assert store.open("video", FP).steps == 40
    assert "is missing; recovered the last good copy" in caplog.text


def test_a_crash_between_the_ledger_and_the_registry_write_keeps_the_ledger(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path)
    _charge(store, 1)
    ledger = store.open("video", FP)
    ledger.on_save = None  # the registry write never happens
    ledger.charge(*ROUND)
    assert store.entries()[f"video:{FP}"]["steps"] == 20
    reopened = store.open("video", FP)
    assert (
        reopened.steps == 40 and store.entries()[f"video:{FP}"]["steps"] == 40
    )  # the ledger ahead wins, re-registered
    # the first charge of new data: registered at open, so a crash right after the ledger write is not an orphan
    new = store.open("video", OTHER)
    new.on_save = None
    new.charge(*ROUND)
    assert store.open("video", OTHER).steps == 20


def test_a_registry_that_is_gone_while_ledgers_remain_is_refused(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path)
    _charge(store, 1)
    store.registry_path.unlink()
    store.registry_path.with_name("registry.prev").unlink()
    with pytest.raises(LedgerError, match="registry .* is missing but ledgers remain"):
        store.open("video", OTHER)  # whatever data: the registry itself is what was lost


def test_a_corrupt_registry_is_refused_and_a_stale_one_is_caught_up(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path)
    _charge(store, 3)
    reg, prev = store.registry_path, store.registry_path.with_name("registry.prev")
    reg.write_bytes(b"garbage")  # newest unreadable: the .prev registry (one charge behind) is used
    assert store.open("video", FP).steps == 60 and store.entries()[f"video:{FP}"]["steps"] == 60
    for p in (reg, prev):
        p.write_bytes(b"garbage")
    with pytest.raises(LedgerError, match="registry is unreadable"):
        store.open("video", FP)


def test_a_copy_kept_elsewhere_restores_a_ledger_that_is_behind(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path)
    _charge(store, 1)
    ahead = [[1.0, 0.05, 60]]
    ledger = store.open("video", FP)
    assert store.recover(ledger, ahead, "run state")
    assert store.open("video", FP).steps == 60 and store.entries()[f"video:{FP}"]["steps"] == 60
    assert not store.recover(ledger, [[1.0, 0.05, 10]], "run state")  # behind: ignored
    assert not store.recover(ledger, [[0.5, 0.05, 100]], "run state")  # another history: ignored
    assert store.open("video", FP).steps == 60


def test_node_caps_count_every_ledger_of_the_platform(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path)
    _charge(store, 2, fp=OTHER)  # the platform's earlier data
    caps = NodeCaps(max_epsilon=_eps(2) + _eps(1) + 1e-6)
    ledger = store.open("video", FP, caps=caps, budget=None)
    assert ledger.charge(*ROUND) == pytest.approx(_eps(1))  # 2 rounds elsewhere + 1 here: fits
    reason = ledger.check(*ROUND)
    assert reason is not None and "node cap" in reason and "2 ledger(s)" in reason
    with pytest.raises(ValueError, match="node cap"):
        ledger.charge(*ROUND)
    assert store.open("video", FP).steps == 20  # the refused round was never charged
    assert store.open("social", FP, caps=caps).check(*ROUND) is None  # another platform's spending is its own
