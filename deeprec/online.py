"""What models share to fold online events into their state (Recommender.learn_online / add_users).

Two rules keep a model's online state a function of the sequence of events, whatever the batching
(a service replays its log in large blocks after a crash):
- a history matrix holds the latest value of each (user, item) pair: `set_entries`;
- a history that is a sequence appends events in their order: `one_event_per_user` splits a block
  into rounds in which each user occurs once, so an appending step never reorders one user's events.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import scipy.sparse as sp


def latest_per_pair(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_cols: int):
    """(rows, cols, values) with one entry per (row, col): the last one given."""
    key = rows.astype(np.int64) * n_cols + cols.astype(np.int64)
    _, first_from_end = np.unique(key[::-1], return_index=True)
    last = len(key) - 1 - first_from_end
    return rows[last], cols[last], values[last]


def set_entries(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                n_rows: int | None = None) -> sp.csr_matrix:
    """A copy of `matrix` (grown to n_rows rows) with entries (rows[e], cols[e]) set to values[e],
    the last value winning where a pair repeats; entries set to 0 are removed. O(nnz + E)."""
    n_rows = matrix.shape[0] if n_rows is None else n_rows
    n_cols = matrix.shape[1]
    base = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    if n_rows > base.shape[0]:
        base.resize((n_rows, n_cols))
    if len(rows) == 0:
        return base
    rows, cols, values = latest_per_pair(np.asarray(rows), np.asarray(cols), np.asarray(values, np.float32), n_cols)
    overwritten = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_rows, n_cols))
    kept = base - base.multiply(overwritten)  # the old values of the pairs set now, removed
    result = (kept + sp.csr_matrix((values, (rows, cols)), shape=(n_rows, n_cols))).tocsr()
    result.eliminate_zeros()
    result.sort_indices()
    return result


def one_event_per_user(users: np.ndarray) -> Iterator[np.ndarray]:
    """Positions of events in rounds: round k holds each user's k-th event (in the order given)."""
    users = np.asarray(users)
    if len(users) == 0:
        return
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, len(users)])
    occurrence = np.empty(len(users), np.int64)
    occurrence[order] = np.arange(len(users)) - np.repeat(starts, counts)
    for k in range(int(occurrence.max()) + 1):  # rounds: at most the largest number of events of one user
        yield np.flatnonzero(occurrence == k)
