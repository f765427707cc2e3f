"""What a command read, said in one line, and said loudly when most of it went nowhere.

Every command prints how many rows it read, accepted and rejected (by reason). When more than
`max_reject_share` of the rows were rejected (or the user filters removed that share of the
learners) it warns, naming the reason and the key that would fix it; with `strict=true` that is an
error. Inputs that leave nothing to learn from or to evaluate stop with the cause: no ratings out
of the pipeline (all rejected, a url_pattern that matched nothing, no view event, the duration
filter, the user filters), no train row, a test split where no user has an item to find.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from deeprec.errors import ConfigError, DataError

log = logging.getLogger("deeprec")


@dataclass
class IntakeConfig:
    """The top-level keys strict / max_reject_share of deeprec-ratings, deeprec-train and deeprec-compare."""

    strict: bool = False  # a warning below becomes an error
    max_reject_share: float = 0.5  # warn when more than this share of the rows is rejected

    def check(self) -> "IntakeConfig":
        if not 0 <= self.max_reject_share <= 1 or math.isnan(self.max_reject_share):
            raise ConfigError(f"max_reject_share={self.max_reject_share} must be a share between 0 and 1")
        return self


def reasons_text(counts: dict[str, int], total: int | None = None) -> str:
    """'bad_timestamp 1, missing_user 1' (or shares of `total`: 'bad_timestamp 75%'), by reason name."""
    items = sorted((reason, int(n)) for reason, n in counts.items() if n)
    if total:
        return ", ".join(f"{reason} {n / total:.0%}" for reason, n in items)
    return ", ".join(f"{reason} {n}" for reason, n in items)


def rows_line(source: str, rows_in: int, rejected: dict[str, int]) -> str:
    """'<source>: 26 rows read, 24 accepted, 2 rejected (bad_timestamp 1, missing_user 1)'."""
    n_rejected = int(sum(rejected.values()))
    detail = f" ({reasons_text(rejected)})" if n_rejected else ""
    return f"{source}: {rows_in} rows read, {rows_in - n_rejected} accepted, {n_rejected} rejected{detail}"


REASON_HINTS = {
    "bad_timestamp": "timestamps must be ISO-8601 text or epoch seconds / milliseconds (docs/log-format.md)",
    "missing_user": "rows without a user_id",
    "missing_item": "rows without an item_id",
    "duplicate": "exact repeats of an earlier row",
    "repeated_pair": "earlier rows of a (user, item) pair; the latest row counts",
}


def rating_hint(extras: dict) -> str:
    """The data.rating_range advice: the range set, the range the file's ratings really span."""
    have, span = extras.get("rating_range"), extras.get("rating_span")
    hint = f"ratings outside data.rating_range={have}"
    if span is not None:
        lo, hi = (float(v) for v in span)
        hint += f"; this input's ratings run from {lo} to {hi}: give data.rating_range=[{lo}, {hi}] if that is their scale"
    return hint


def check_share(what: str, share: float, detail: str, cfg: IntakeConfig) -> None:
    """Warn (strict: raise) when `share` of the input went nowhere."""
    if share <= cfg.max_reject_share:
        return
    message = f"{share:.0%} of {what}{detail}"
    if cfg.strict:
        raise DataError(f"{message} (strict=true; max_reject_share={cfg.max_reject_share})")
    log.warning("WARNING: %s (above max_reject_share=%s; strict=true makes this an error)", message, cfg.max_reject_share)


def check_rejects(rows_in: int, rejected: dict[str, int], cfg: IntakeConfig, hints: dict[str, str]) -> None:
    """The rejected-rows warning, with a hint for the largest reason."""
    n_rejected = int(sum(rejected.values()))
    if not rows_in or not n_rejected:
        return
    top = max(rejected, key=lambda reason: rejected[reason])
    hint = hints.get(top, REASON_HINTS.get(top, ""))
    detail = f" ({reasons_text(rejected, rows_in)})" + (f": {hint}" if hint else "")
    check_share("the rows were rejected", n_rejected / rows_in, detail, cfg)


# -- deeprec-ratings ----------------------------------------------------------------------------------
def explain_no_ratings(summary: dict, prefix: str = "ratings.") -> str:
    """Why a ratings run produced no rating, naming the key to change (SPEC 1.1-1.6 in order)."""
    source, cfg = summary.get("source", "the log"), summary.get("config", {})
    rows_in, rejected = summary["rows_in"], summary["rows_rejected"]
    if summary["rows_accepted"] == 0:
        return f"{source}: no ratings: all {rows_in} rows were rejected ({reasons_text(rejected)}); see rejects.parquet"
    if summary.get("rows_naming_a_lesson", 1) == 0:
        example = summary.get("unmatched_url_example")
        if example is not None:
            return (f"{source}: no ratings: {prefix}url_pattern={cfg.get('url_pattern')!r} matched none of the URLs "
                    f"(e.g. {example!r}); give a pattern whose (?P<course>...) and (?P<lesson>...) groups match "
                    "your lesson URLs (docs/log-format.md)")
        return f"{source}: no ratings: no row names both a course_id and a lesson_id"
    if summary["lesson_views"] == 0:
        return (f"{source}: no ratings: none of the {summary['rows_naming_a_lesson']} rows naming a lesson has an event "
                f"in {prefix}view_events={cfg.get('view_events')}")
    if summary["users_before_filters"] == 0:
        return (f"{source}: no ratings: no lesson lasted {prefix}min_lesson_seconds={cfg.get('min_lesson_seconds')} "
                "or longer; lower it")
    removed = {k: v for k, v in summary["users_removed"].items() if v}
    return (f"{source}: no ratings: the user filters removed all {summary['users_before_filters']} users "
            f"({reasons_text(removed)}); lower {prefix}min_courses or {prefix}min_sessions, or raise {prefix}max_courses")


def report_ratings(summary: dict, cfg: IntakeConfig, where: str | None = None, prefix: str = "ratings.") -> None:
    """deeprec-ratings' summary line and warnings; DataError when there is no rating."""
    tail = f" in {where}" if where else ""
    log.info("%s -> %d users x %d courses, %d ratings%s",
             rows_line(summary["source"], summary["rows_in"], summary["rows_rejected"]),
             summary["users"], summary["courses"], summary["ratings"], tail)
    check_rejects(summary["rows_in"], summary["rows_rejected"], cfg, {})
    before, removed = summary["users_before_filters"], summary["users_removed"]
    if before and summary["ratings"]:
        gone = {k: v for k, v in removed.items() if v}
        check_share("the learners were removed by the user filters", sum(gone.values()) / before,
                    f" ({reasons_text(gone)}); lower {prefix}min_courses or {prefix}min_sessions to keep them", cfg)
    if summary["ratings"] == 0:
        raise DataError(explain_no_ratings(summary, prefix))


# -- deeprec-train / deeprec-compare ------------------------------------------------------------------
def split_counts(data) -> dict[str, int]:
    counts = data.frame["split"].value_counts()
    return {split: int(counts.get(split, 0)) for split in ("train", "valid", "test")}


def evaluable_users(data, split: str = "test") -> int:
    """Users with an item in `split` that is not among their items of the earlier splits (the ones
    the evaluator can find: earlier items are excluded from the ranking)."""
    truth = data.truth(split)
    earlier = data.matrix(data.earlier_splits(split), binary=True)
    findable = truth - truth.multiply(earlier > 0)
    findable.eliminate_zeros()
    return int((np.diff(findable.tocsr().indptr) > 0).sum())


def report_data(data, cfg: IntakeConfig) -> None:
    """What deeprec-train / deeprec-compare read, in one line; warnings; stops when there is nothing
    to train on or to evaluate."""
    extras = data.extras
    source = extras.get("source", data.name)
    counts = split_counts(data)
    shape = (f"{data.n_users} users x {data.n_items} items; "
             f"train {counts['train']} / valid {counts['valid']} / test {counts['test']} rows")
    ratings = extras.get("ratings_summary")
    if ratings is not None:  # data=events: rows are log events, then ratings
        rows_in, rejected = ratings["rows_in"], ratings["rows_rejected"]
        log.info("%s -> %d ratings; %s", rows_line(source, rows_in, rejected), ratings["ratings"], shape)
    elif "rows_in" in extras:
        rejects = extras.get("rejects")
        rows_in = extras["rows_in"]
        rejected = rejects["reason"].value_counts().to_dict() if rejects is not None and len(rejects) else {}
        log.info("%s -> %s", rows_line(source, rows_in, rejected), shape)
    else:
        rows_in, rejected = 0, {}
        log.info("%s: %d interactions -> %s", source, len(data.frame), shape)
    check_rejects(rows_in, rejected, cfg, {"bad_rating": rating_hint(extras)})
    pairs = extras.get("pairs_in_train_and_test", 0)
    if pairs:
        log.warning("WARNING: %d (user, item) %s in both train and test (or valid and test): those test rows "
                    "can never be hit, since the items a user had earlier are excluded from the ranking",
                    pairs, "pair is" if pairs == 1 else "pairs are")
    if counts["train"] == 0:
        raise DataError(f"{source}: no train rows (valid {counts['valid']}, test {counts['test']}); "
                        "a model has nothing to learn from")
    if evaluable_users(data) == 0:
        raise DataError(f"{source}: the test split has {counts['test']} rows and no user has a test item outside "
                        "their train and valid items; there is nothing to evaluate")


def report_evaluated(metrics: dict, data, split: str = "test") -> None:
    """'test: evaluated 145 of 752 users (607 have no test item)'."""
    evaluated = int(metrics.get("n_users_evaluated", 0))
    skipped = int(metrics.get("n_users_skipped", data.n_users - evaluated))
    log.info("%s: evaluated %d of %d users (%d have no %s item)", split, evaluated, data.n_users, skipped, split)
