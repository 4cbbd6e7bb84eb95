"""Training rows: one per user, all of its targets, built from its own history only."""

from __future__ import annotations

import numpy as np
import torch

from fedrec.seqrec.rows import holdout_rows, left_pad, sequential_rows


def test_left_pad_keeps_the_newest_items_at_the_right() -> None:
    ids, mask = left_pad([np.array([1, 2, 3, 4]), np.array([7])], max_len=3)
    assert ids.tolist() == [[2, 3, 4], [0, 0, 7]]
    assert mask.tolist() == [[True, True, True], [False, False, True]]


def test_sequential_rows_predict_the_next_item_at_every_position() -> None:
    rows = sequential_rows([np.array([5, 6, 7, 8]), np.array([1, 2])], max_len=50)
    assert rows.ids.tolist() == [[5, 6, 7], [0, 0, 1]]
    assert rows.targets[..., 0].tolist() == [[6, 7, 8], [0, 0, 2]]
    assert rows.target_mask[..., 0].tolist() == rows.mask.tolist()
    assert rows.num_targets.tolist() == [3, 1]


def test_holdout_rows_split_each_history_into_inputs_and_targets() -> None:
    hist = [np.arange(10, 20), np.array([3, 4])]
    rows = holdout_rows(hist, max_len=50, holdout=0.2, seeds=[(0, 0), (0, 1)])
    for r, h in enumerate(hist):
        inputs = set(rows.ids[r][rows.mask[r]].tolist())
        targets = set(rows.targets[r, 0][rows.target_mask[r, 0]].tolist())
        assert inputs | targets == set(h.tolist()) and not inputs & targets
    assert rows.num_targets.tolist() == [2, 1]  # 20% of 10; at least one


def test_a_row_depends_on_its_own_history_only() -> None:
    hist = [np.arange(10, 20), np.arange(30, 45)]
    other = [np.arange(10, 20), np.arange(50, 52)]  # the second user changed
    for first in (True, False):  # the changed user before or after the unchanged one
        order = (lambda x: x) if first else (lambda x: x[::-1])
        a = holdout_rows(order(hist), 50, 0.3, order([(1, 0), (1, 1)]))
        b = holdout_rows(order(other), 50, 0.3, order([(1, 0), (1, 1)]))
        r = 0 if first else 1
        assert torch.equal(a.ids[r][a.mask[r]], b.ids[r][b.mask[r]])
        assert torch.equal(a.targets[r, 0][a.target_mask[r, 0]], b.targets[r, 0][b.target_mask[r, 0]])


def test_length_groups_hold_every_row_once_each_cut_to_its_longest() -> None:
    hist = [np.arange(1, n + 2) for n in (9, 1, 4, 2, 7, 3)]
    rows = sequential_rows(hist, max_len=8)
    parts = rows.by_length(3)
    assert sorted(torch.cat([index for index, _ in parts]).tolist()) == list(range(6))
    for index, sub in parts:
        assert sub.ids.shape[1] == int(rows.mask[index].sum(1).max())  # no column of padding only
        keep = sub.ids.shape[1]
        assert torch.equal(sub.ids, rows.ids[index, -keep:])
        assert torch.equal(sub.targets, rows.targets[index, -keep:])
        assert torch.equal(sub.num_targets, rows.num_targets[index])  # no target is cut
    held = holdout_rows(hist, 8, 0.5, [(0, u) for u in range(6)])
    for index, sub in held.by_length(2):
        assert torch.equal(sub.num_targets, held.num_targets[index])
        assert sub.targets.shape[-1] == int(held.num_targets[index].max())


def test_one_target_rows_keep_the_inputs_and_one_of_each_rows_targets() -> None:
    hist = [np.arange(1, n + 2) for n in (5, 1, 3)] + [np.array([4])]
    for rows in (sequential_rows(hist, 8), holdout_rows(hist[:3], 8, 0.5, [(0, u) for u in range(3)])):
        one = rows.one_target([(7, u) for u in range(len(rows))])
        assert torch.equal(one.ids, rows.ids) and torch.equal(one.targets, rows.targets)
        want = (rows.num_targets > 0).long()
        assert torch.equal(one.num_targets, want)  # one target where there were any
        assert bool((one.target_mask <= rows.target_mask).all())  # one of the row's own
        again = rows.one_target([(7, u) for u in range(len(rows))])
        assert torch.equal(again.target_mask, one.target_mask)  # drawn from the row's own seed
