"""Exact resume for the sequence models: stop after 2 epochs, resume to 4, same weights and metrics
as a straight 4-epoch run (the per-epoch row order and random state depend only on seed and epoch)."""

from __future__ import annotations

import pytest

from deeprec.models.attention import AttentionRanker
from deeprec.models.lstm import LSTMRecommender
from deeprec.models.sasrec import SASRec
from test_ncf import check_round_trip_and_resume, one_thread  # noqa: F401

SEQUENCE_MODELS = {
    "lstm": (LSTMRecommender, ("model.embedding_dim=8", "model.hidden_dim=8", "model.max_len=6",
                               "model.window_stride=3", "model.batch_size=32", "model.dropout=0.2")),
    "attention": (AttentionRanker, ("model.embedding_dim=8", "model.max_len=6", "model.batch_size=32")),
    "sasrec": (SASRec, ("model.embedding_dim=8", "model.max_len=6", "model.batch_size=32", "model.num_heads=1",
                        "model.lr_schedule=plateau", "model.lr_patience=0")),
}


@pytest.mark.parametrize("name", sorted(SEQUENCE_MODELS))
def test_sequence_models_resume_exactly(name, tmp_path):
    cls, overrides = SEQUENCE_MODELS[name]
    check_round_trip_and_resume(tmp_path, name, cls, overrides)
