"""Ratings inferred from platform logs (SPEC section 1): events -> sessions -> lesson durations ->
share of each course viewed -> 0..5 ratings with a temporal split.

    from deeprec.data.ratings import RatingsConfig, rate_events, write_outputs
    result = rate_events(read_events("log.csv"), RatingsConfig(threshold="global", penalty="log"))
    write_outputs(result, "ratings_out")
"""

from deeprec.data.ratings.config import RatingsConfig
from deeprec.data.ratings.durations import aggregate_events, lesson_durations
from deeprec.data.ratings.events import parse_timestamps_us, validate_events
from deeprec.data.ratings.io import read_catalogue, read_events, write_outputs
from deeprec.data.ratings.pipeline import RatingsResult, rate_event_files, rate_events, rate_log
from deeprec.data.ratings.rating import PENALTIES, penalty_rating, ratings_from_durations

__all__ = [
    "PENALTIES",
    "RatingsConfig",
    "RatingsResult",
    "aggregate_events",
    "lesson_durations",
    "parse_timestamps_us",
    "penalty_rating",
    "rate_event_files",
    "rate_events",
    "rate_log",
    "ratings_from_durations",
    "read_catalogue",
    "read_events",
    "validate_events",
    "write_outputs",
]
