"""``POST /v1/events``: validated feedback events to Kinesis Data Firehose, which delivers them to raw/.

Each event becomes one newline-terminated JSON object in the native schema (one Firehose record),
so the objects Firehose writes under ``raw/events/`` are JSON Lines the ingest already reads.
Events without an ``event_id`` get a deterministic one, so a client resending a batch after a
timeout produces the same ids and the ingest de-duplicates.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body
from pydantic import BaseModel, Field, model_validator

from shelfwise.events import MIN_TS_MS, Event, derive_event_id
from shelfwise.instants import epoch_ms, iso_ms
from shelfwise.observability import logger, metrics
from shelfwise.pseudonym import Pseudonymiser, scrub
from shelfwise.serving.api import StrictModel, no_bool_numbers, responses
from shelfwise.serving.errors import DeliveryError

MAX_BATCH_RECORDS = 500


@dataclass
class CollectResult:
    accepted: int
    event_ids: list[str]
    failed: list[str] = field(default_factory=list)


def event_row(event: Event, pseudonymiser: Pseudonymiser | None = None) -> dict[str, Any]:
    """The native-schema JSON object of one event, with its event_id filled in.

    With a pseudonymiser (a key is configured), the user id is its pseudonym and obvious personal
    data in ``properties`` (e-mail addresses, phone numbers) is replaced by its pseudonym, before
    the event leaves this function: raw/ then holds no raw user id from the API.
    """
    row = event.model_dump(mode="json", exclude_none=True)
    if pseudonymiser is not None:
        if "user_id" in row:
            row["user_id"] = pseudonymiser.one(row["user_id"])
        if "properties" in row:
            row["properties"] = scrub(row["properties"], pseudonymiser)
    if "event_id" not in row:
        row["event_id"] = derive_event_id(
            event.event_type,
            row.get("user_id"),
            event.session_id,
            event.item_id,
            row["timestamp"],
            event.recommendation_id,
            event.position,
            event.query,
        )
    return row


class EventCollector:
    """Sends event batches to one Firehose delivery stream, retrying failed records once.

    ``min_ts_ms``: the deployment's floor (``shelfwise.time_floor``); an event timed before it is
    refused here as the ingest would quarantine it, so an accepted event is one training can use.
    """

    def __init__(
        self,
        firehose: Any,
        stream_name: str,
        pseudonymiser: Pseudonymiser | None = None,
        min_ts_ms: int | None = None,
    ) -> None:
        self.firehose, self.stream_name = firehose, stream_name
        self.pseudonymiser = pseudonymiser
        self.min_ts_ms = MIN_TS_MS if min_ts_ms is None else min_ts_ms

    def check_floor(self, events: Sequence[Event]) -> None:
        """Refuse the batch (422 naming each event) if any event is timed before the floor."""
        early = [i for i, e in enumerate(events) if epoch_ms(e.timestamp) < self.min_ts_ms]
        if early:
            msg = f"Value error, timestamp must not be before {iso_ms(self.min_ts_ms)} (the stack's IngestMinTime)"
            raise RequestValidationError(
                [
                    {"type": "value_error", "loc": ("body", "events", i, "timestamp"), "msg": msg}
                    for i in early
                ]
            )

    def collect(self, events: Sequence[Event]) -> CollectResult:
        rows = [event_row(e, self.pseudonymiser) for e in events]
        ids = [r["event_id"] for r in rows]
        failed: list[str] = []
        for start in range(0, len(rows), MAX_BATCH_RECORDS):
            chunk = list(range(start, min(start + MAX_BATCH_RECORDS, len(rows))))
            for attempt in range(2):
                records = [
                    {"Data": (json.dumps(rows[i], separators=(",", ":")) + "\n").encode()} for i in chunk
                ]
                try:
                    resp = self.firehose.put_record_batch(
                        DeliveryStreamName=self.stream_name, Records=records
                    )
                except Exception as exc:
                    logger.warning(
                        "event batch not delivered", extra={"records": len(chunk), "error": str(exc)}
                    )
                    if attempt == 1:
                        failed += [ids[i] for i in chunk]
                    continue
                if not resp.get("FailedPutCount"):
                    break
                chunk = [
                    i for i, res in zip(chunk, resp["RequestResponses"], strict=True) if res.get("ErrorCode")
                ]
                if attempt == 1:
                    failed += [ids[i] for i in chunk]
        if failed and len(failed) == len(rows):
            raise DeliveryError(f"none of {len(rows)} events could be delivered; retry the batch")
        return CollectResult(accepted=len(rows) - len(failed), event_ids=ids, failed=failed)


MAX_EVENTS = 500


class EventIn(Event):
    """The event schema as the API accepts it: booleans are not numbers."""

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data: Any) -> Any:
        return no_bool_numbers(cls, data)


class EventsRequest(StrictModel):
    """A batch of feedback events (clicks, carts, purchases) in the native event schema."""

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsResponse(BaseModel):
    accepted: int = Field(ge=0)
    event_ids: list[str]
    failed: list[str] = Field(default_factory=list, description="event ids not delivered; safe to resend")


def events_router(collector: Callable[[], EventCollector]) -> Router:
    """Routes of the collect_events function."""
    router = Router()

    @router.post(
        "/v1/events",
        summary="Feedback events (clicks, carts, purchases) echoing recommendation_id",
        responses=responses(EventsResponse, "Events accepted for delivery"),
        tags=["events"],
    )
    def collect(body: Annotated[EventsRequest, Body()]) -> EventsResponse:
        events = collector()
        events.check_floor(body.events)
        result = events.collect(body.events)
        metrics.add_dimensions(Endpoint="events")
        metrics.add_metric(name="EventsAccepted", unit="Count", value=result.accepted)
        metrics.add_metric(name="EventsFailed", unit="Count", value=len(result.failed))
        return EventsResponse(accepted=result.accepted, event_ids=result.event_ids, failed=result.failed)

    return router
