"""collect_events: ``POST /v1/events`` validated with the event schema and sent to Firehose -> raw/."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from shelfwise.aws import client
from shelfwise.observability import logger, metrics, tracer
from shelfwise.serving.api import build_resolver, serve
from shelfwise.serving.collect import EventCollector, events_router
from shelfwise.settings import load_settings


class Settings(BaseModel):
    """Environment of this function (template.yaml)."""

    events_stream: str = Field(min_length=1)


settings = load_settings(Settings)
logger.append_keys(service="collect_events")
collector = EventCollector(client("firehose"), settings.events_stream)
app = build_resolver(events_router(lambda: collector))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context)
