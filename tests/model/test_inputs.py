"""User and item text construction."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.data.types import PlatformData
from fedrec.model.backbone import load_backbone
from fedrec.model.inputs import TextInputs
from tests.synthetic import synthetic_platform


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return load_backbone("tiny")[1]


def test_user_text_is_most_recent_first_and_truncated(tokenizer) -> None:  # type: ignore[no-untyped-def]
    data = synthetic_platform()
    inputs = TextInputs(data, tokenizer, item_max_tokens=16, user_max_tokens=12, user_item_tokens=4)
    toks = inputs.user_tokens(np.array([0, 7]))  # 7 is the most recent
    assert toks[0] == tokenizer.cls_token_id and toks[-1] == tokenizer.sep_token_id and len(toks) <= 12
    newest = tokenizer(data.item_texts[7], add_special_tokens=False)["input_ids"][:4]
    assert toks[1 : 1 + len(newest)] == newest
    long = inputs.user_tokens(np.arange(20))
    assert len(long) in (11, 12) and long[-1] == tokenizer.sep_token_id
    assert inputs.user_tokens(np.array([], dtype=np.int64)) == [tokenizer.cls_token_id, tokenizer.sep_token_id]


def test_item_text_truncated_with_special_tokens(tokenizer) -> None:  # type: ignore[no-untyped-def]
    data = synthetic_platform()
    inputs = TextInputs(data, tokenizer, item_max_tokens=5)
    ids, mask = inputs.items([0, 1])
    assert ids.shape == (2, 5) and int(ids[0, 0]) == tokenizer.cls_token_id and int(ids[0, 4]) == tokenizer.sep_token_id
    assert mask.sum() == 10


def test_friend_segment_uses_friends_train_items_only(tokenizer) -> None:  # type: ignore[no-untyped-def]
    base = synthetic_platform(num_users=4)
    data = PlatformData(**{**base.__dict__, "friends": {0: [1], 1: [0]}})
    inputs = TextInputs(data, tokenizer, user_max_tokens=40, user_item_tokens=4, friend_signal=True, friend_tokens=16)
    seg = inputs.friend_segment[0]
    friend_items = [i for i in data.train[1].tolist() if i not in set(data.train[0].tolist())]
    first = tokenizer(data.item_texts[min(friend_items)], add_special_tokens=False)["input_ids"][:4]
    assert all(t in seg for t in first)
    with_friends = inputs.user_tokens(data.train[0], user=0)
    assert with_friends[-len(seg) :] == seg and len(with_friends) <= 40
    assert 2 not in inputs.friend_segment  # users without friends get no segment


def test_friend_signal_needs_a_graph(tokenizer) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="no friend graph"):
        TextInputs(synthetic_platform(), tokenizer, friend_signal=True)
