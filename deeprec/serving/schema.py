"""The JSON bodies of /recommend and /feedback, and one-line reasons for everything they refuse.

pydantic (strict, extra fields forbidden, no NaN or infinity) checks types and fields; what needs the
service's state (item ids of the catalogue, k within limits, event names) is checked in app.py.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Union

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, TypeAdapter, ValidationError, field_validator, model_validator

Id = Union[StrictStr, StrictInt]  # ids are text; a JSON integer is taken as its decimal text


class BadRequest(Exception):
    """A refused request: an HTTP status and one line saying why (and what would be valid)."""

    def __init__(self, status: int, reason: str, kind: str = "invalid", events: int = 1) -> None:
        super().__init__(reason)
        self.status, self.reason, self.kind, self.events = status, reason, kind, events


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class RecommendRequest(Strict):
    user_id: Id
    k: StrictInt = 10
    exclude_seen: StrictBool = True
    explain: StrictBool = False


class FeedbackEvent(Strict):
    event_id: Id
    user_id: Id
    item_id: Id
    timestamp: Union[float, StrictStr] = Field(description="epoch seconds, or ISO-8601 text (naive = UTC)")
    reward: float | None = None
    event: StrictStr | None = None
    decision_id: StrictStr | None = None

    @field_validator("timestamp")
    @classmethod
    def epoch_seconds(cls, value: float | str) -> float:
        if isinstance(value, float):
            return value
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is neither epoch seconds nor ISO-8601 text") from None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()

    @model_validator(mode="after")
    def reward_or_event(self) -> "FeedbackEvent":
        if (self.reward is None) == (self.event is None):
            raise ValueError("give exactly one of 'reward' (a number) and 'event' (a name)")
        return self


EVENTS = TypeAdapter(list[FeedbackEvent])
FIELDS = {"recommend": sorted(RecommendRequest.model_fields), "feedback": sorted(FeedbackEvent.model_fields)}


def location(loc: tuple, prefix: str) -> str:
    """('events', 3, 'reward') -> events[3].reward"""
    text = prefix
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def one_line(exc: ValidationError, body: str, prefix: str = "", single: bool = False) -> str:
    """The first problem of a ValidationError as one sentence (and how many more there are).
    `single`: the body was one event, so its position in the batch is left out of the location."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(part for part in first["loc"] if part not in ("str", "int", "float"))
    if single and loc and loc[0] == 0:
        loc = loc[1:]
    where = location(loc, prefix)
    kind = first["type"]
    if kind == "extra_forbidden":
        text = f"unknown field {where}; valid fields: {FIELDS[body]}"
    elif kind == "missing":
        text = f"missing field {where}"
    else:
        text = f"{where}: {first['msg'].removeprefix('Value error, ')}"
        if "input" in first and not isinstance(first["input"], (dict, list)):
            text += f" (got {str(first['input'])[:60]!r})"
    more = len({tuple(e["loc"])[:2] for e in errors}) - 1
    return text + (f"; and {more} more problem(s)" if more > 0 else "")


def parse_json(raw: bytes) -> Any:
    try:
        return pydantic_core.from_json(raw, allow_inf_nan=True)  # NaN is refused by the models, by name
    except ValueError as exc:
        raise BadRequest(400, f"the body is not valid JSON ({exc})", "malformed_json") from None


def parse_recommend(raw: bytes) -> RecommendRequest:
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise BadRequest(422, f"the body must be a JSON object with fields {FIELDS['recommend']}", "wrong_type")
    try:
        return RecommendRequest.model_validate(body)
    except ValidationError as exc:
        raise BadRequest(422, one_line(exc, "recommend"), "invalid_field") from None


def parse_feedback(raw: bytes, max_events: int) -> list[FeedbackEvent]:
    """One event (an object), a list of events, or {"events": [...]}; all or nothing."""
    body = parse_json(raw)
    prefix, single = "", False
    if isinstance(body, dict) and "events" in body:
        if set(body) != {"events"}:
            raise BadRequest(422, f"a batch is {{\"events\": [...]}} with no other field; got {sorted(body)}", "invalid_field")
        body, prefix = body["events"], "events"
    elif isinstance(body, dict):
        body, single = [body], True
    elif isinstance(body, list):
        prefix = "events"
    if not isinstance(body, list):
        raise BadRequest(422, "the body must be an event object, a list of events or {\"events\": [...]}", "wrong_type")
    if not body:
        raise BadRequest(422, "the batch holds no event", "empty_batch", events=0)
    if len(body) > max_events:
        raise BadRequest(413, f"the batch holds {len(body)} events; at most limits.max_batch_events={max_events}",
                         "batch_too_large", events=len(body))
    try:
        return EVENTS.validate_python(body)
    except ValidationError as exc:
        raise BadRequest(422, one_line(exc, "feedback", prefix, single), "invalid_field", events=len(body)) from None
