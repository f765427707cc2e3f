"""SASRec: learns a planted next-item chain far above popularity, conditions on the history it is
given (observe / update_state), rejects bad settings, and resumes exactly (tests/test_resume.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deeprec.baselines.pop import Popularity
from deeprec.errors import ConfigError
from deeprec.evaluation.evaluator import evaluate_recommender
from deeprec.models.sasrec import SASRec
from test_lstm import fitted_on_chain, successor

SMALL = dict(embedding_dim=32, num_blocks=1, num_heads=2, dropout=0.0, max_len=8, lr=0.01, batch_size=64)


@pytest.fixture(scope="module")
def chain():
    torch.set_num_threads(1)
    return fitted_on_chain(SASRec, SMALL)


def test_learns_the_planted_chain_far_better_than_pop(chain):
    data, _, model = chain
    sasrec = evaluate_recommender(model, data, "test")
    pop = evaluate_recommender(Popularity(data.n_users, data.n_items).fit(data), data, "test")
    # The test item is a deterministic function of the last train + valid item.
    assert sasrec["ndcg@10"] > 0.9 and sasrec["ndcg@10"] > pop["ndcg@10"] + 0.5


def test_scores_follow_the_observed_history_and_appended_events(chain):
    data, cycle, model = chain
    users = torch.arange(data.n_users)
    model.observe(data, ("train",))
    last = model.history_items[users, model.history_lengths[users] - 1].numpy()
    assert (model.score(users).argmax(1).numpy() == successor(cycle, last)).mean() > 0.9
    # One appended event (a jump off each user's walk, a transition never seen in training) moves
    # most predictions to that event's successor; a random guess would be right 1 time in 40.
    new_items = torch.from_numpy(cycle[np.arange(data.n_users) % len(cycle)])
    model.update_state(users, new_items, torch.full((data.n_users,), 2e9))
    assert (model.score(users).argmax(1).numpy() == successor(cycle, new_items.numpy())).mean() > 0.75
    model.observe(data, ("train",))


def test_bad_settings_fail_fast():
    with pytest.raises(ConfigError, match="num_heads"):
        SASRec(3, 5, embedding_dim=10, num_heads=4)
    with pytest.raises(ConfigError, match="window_stride"):
        SASRec(3, 5, max_len=4, window_stride=5)
