"""Splits (SPEC 1.9 and friends) and the interactions adapter, against hand-worked expectations."""

import numpy as np
import pandas as pd
import pytest

from deeprec.data.adapters.interactions import InteractionsDataConfig, load
from deeprec.data.splits import SplitConfig, assign_splits, temporal_train_count
from deeprec.errors import DataError


def test_temporal_train_count_matches_spec_rule():
    # n_train = min(max(floor(0.7 n), 1), n - 1): worked by hand
    assert temporal_train_count(np.array([2, 3, 4, 5, 10])).tolist() == [1, 2, 2, 3, 7]


def _frame(user_items):
    rows = [(u, i, t) for u, items in user_items.items() for t, i in enumerate(items)]
    return pd.DataFrame(rows, columns=["user", "item", "timestamp"]).astype({"timestamp": float})


def test_temporal_split_orders_by_time_and_carves_valid():
    frame = _frame({0: [10, 11, 12], 1: [20, 21, 22, 23, 24, 25, 26, 27, 28, 29]})
    frame = frame.sample(frac=1.0, random_state=3)  # input order must not matter
    split = assign_splits(frame, SplitConfig(strategy="temporal", valid_share=0.1))
    got = dict(zip(zip(frame["user"], frame["item"]), split))
    # user 0: 3 items -> 2 train (one of them becomes valid) + 1 test, in time order
    assert [got[(0, i)] for i in (10, 11, 12)] == ["train", "valid", "test"]
    # user 1: 10 items -> 7 train (floor(0.7)=... 0.1*7 -> 1 valid) + 3 test
    assert [got[(1, 20 + j)] for j in range(10)] == ["train"] * 6 + ["valid"] + ["test"] * 3


def test_leave_last_k_and_random():
    frame = _frame({0: [1, 2, 3, 4], 1: [5]})
    split = assign_splits(frame, SplitConfig(strategy="leave_last_k", k=1))
    assert split.tolist() == ["train", "train", "valid", "test", "train"]
    rnd = assign_splits(frame, SplitConfig(strategy="random", valid_share=0.0, seed=1))
    # 4 items -> n_train = min(max(floor(2.8), 1), 3) = 2, so 2 train + 2 test; 1 item -> train
    assert (rnd[frame["user"] == 0] == "train").sum() == 2
    assert (rnd[frame["user"] == 0] == "test").sum() == 2
    assert rnd[frame["user"] == 1].tolist() == ["train"]
    other_seed = assign_splits(frame, SplitConfig(strategy="random", valid_share=0.0, seed=2))
    assert (other_seed[frame["user"] == 0] == "train").sum() == 2


def test_interactions_adapter_rejects_and_explicit_split(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text(
        "user_id,item_id,rating,timestamp,split\n"
        "a,i1,5,100,train\n"
        "a,i2,4,200,test\n"
        ",i3,3,300,train\n"  # missing user
        "b,i1,9,100,train\n"  # rating out of range
        "b,i2,3,xx,train\n"  # bad timestamp
        "a,i1,5,100,train\n"  # duplicate
        "b,i3,2,400,test\n"
    )
    data = load(InteractionsDataConfig(path=str(path)))
    reasons = data.extras["rejects"]["reason"].value_counts().to_dict()
    assert reasons == {"missing_user": 1, "bad_rating": 1, "bad_timestamp": 1, "duplicate": 1}
    assert data.extras["rows_in"] == len(data.frame) + sum(reasons.values())
    assert sorted(data.frame["split"]) == ["test", "test", "train"]
    assert list(data.user_ids) == ["a", "b"] and list(data.item_ids) == ["i1", "i2", "i3"]


def test_interactions_adapter_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("user,item\n1,2\n")
    with pytest.raises(DataError, match="bad.csv.*user_id"):
        load(InteractionsDataConfig(path=str(path)))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        load(InteractionsDataConfig(path=str(empty)))
    wrong = tmp_path / "s.csv"
    wrong.write_text("user_id,item_id,split\n1,2,training\n")
    with pytest.raises(DataError, match="'training'"):
        load(InteractionsDataConfig(path=str(wrong)))
