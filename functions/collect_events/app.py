"""collect_events: ``POST /v1/events`` validated with the event schema and sent to Firehose -> raw/."""

from typing import Any, Literal

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field

from shelfwise.aws import client
from shelfwise.observability import logger, metrics, tracer
from shelfwise.pseudonym import Pseudonymiser, read_key
from shelfwise.serving.api import Access, build_resolver, serve
from shelfwise.serving.collect import EventCollector, events_router
from shelfwise.serving.config import served_at
from shelfwise.serving.quota import ClientQuota
from shelfwise.settings import load_settings
from shelfwise.time_floor import TimeFloorSettings


class Settings(TimeFloorSettings):
    """Environment of this function (template.yaml); INGEST_MIN_TIME: the ingest's floor, which the
    API holds events to as well (shelfwise.time_floor)."""

    events_stream: str = Field(min_length=1)
    # The template's ApiAuth: anything but NONE (the explicitly open API) needs an authenticated client.
    api_auth: Literal["NONE", "AWS_IAM", "JWT"] = "AWS_IAM"
    # Empty: user ids are kept as they arrive.
    pseudonymisation_key_parameter: str = ""
    # Per-client quota (requests per minute) over the usage table; no table: none.
    client_usage_table: str = ""
    client_requests_per_minute: int = Field(default=1200, ge=1)


settings = load_settings(Settings)
logger.append_keys(service="collect_events")
pseudonymiser = (
    Pseudonymiser(read_key(client("ssm"), settings.pseudonymisation_key_parameter))
    if settings.pseudonymisation_key_parameter
    else None
)
collector = EventCollector(client("firehose"), settings.events_stream, pseudonymiser, settings.min_ts_ms)
quota = (
    ClientQuota(
        client("dynamodb"), settings.client_usage_table, settings.client_requests_per_minute, served_at
    )
    if settings.client_usage_table
    else None
)
app = build_resolver(events_router(lambda: collector), access=Access(settings.api_auth, quota))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context)
