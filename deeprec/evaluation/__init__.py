"""Shared evaluation (SPEC section 3): pure metric functions and a chunked full-ranking evaluator.

This package never imports a concrete model: it sees only the `Recommender` interface.
"""

from deeprec.evaluation.metrics import evaluate_topk

__all__ = ["evaluate_topk"]
