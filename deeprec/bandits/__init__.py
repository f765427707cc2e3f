"""Contextual bandits: batched LinUCB with ability-aware exploration (SPEC section 2)."""

from deeprec.bandits.linucb import BatchedLinUCB

__all__ = ["BatchedLinUCB"]
