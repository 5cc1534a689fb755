"""serve_recommendations: recommendations, similar items, search and health behind the HTTP API.

Everything expensive happens once per execution environment, here at import (Lambda's init
phase): settings, clients, the registry reader, the bundle download (started first) and the
first model load.
Routes live in ``shelfwise.serving.http``; behaviour in ``shelfwise.serving``.
"""

import gc

# Init allocates hundreds of thousands of long-lived objects (modules, models, the catalogue):
# cyclic collections during it are wasted work. Re-enabled, with everything frozen, at the end.
gc.disable()

from typing import Any, Literal  # noqa: E402

from pydantic import Field, Json  # noqa: E402

from shelfwise import aws_lite, wiring  # noqa: E402
from shelfwise.aws import light_client  # noqa: E402
from shelfwise.serving.config import CATALOGUE_STOCK_KEY, ServingConfig, ServingRules  # noqa: E402
from shelfwise.serving.loader import ModelLoader  # noqa: E402
from shelfwise.settings import load_settings  # noqa: E402


class Settings(wiring.RegistrySettings):
    """Environment of this function (template.yaml)."""

    models_bucket: str = Field(min_length=3)
    alias_ttl_seconds: float = Field(default=30.0, ge=0)
    model_cache_dir: str = "/tmp/shelfwise/models"
    serving_rules: Json[ServingRules] = ServingRules()
    canary_mode: Literal["split", "interleave"] = "split"
    interleave_factor: float = Field(default=2.0, ge=1.0, le=10.0)
    # The catalogue's live stock snapshot (empty: filters use the bundle's stock only).
    catalogue_bucket: str = ""
    stock_ttl_seconds: float = Field(default=30.0, ge=0)
    # The template's ApiAuth: anything but NONE (the explicitly open API) needs an authenticated client.
    api_auth: Literal["NONE", "AWS_IAM", "JWT"] = "AWS_IAM"
    # Empty: user ids are looked up as they arrive.
    pseudonymisation_key_parameter: str = ""
    # Per-client quota (requests per minute) over the usage table; no table: none.
    client_usage_table: str = ""
    client_requests_per_minute: int = Field(default=6000, ge=1)


settings = load_settings(Settings)

# Serving only reads (bundle files from S3, aliases from SSM): the SDK-free clients, which keep
# boto3 (about 0.5 s of imports and client set-up) off the cold start; see shelfwise.aws_lite.
_s3 = light_client("s3")
# Read-only use of the registry: only aliases() is called, which needs SSM alone.
registry = wiring.registry(settings, read_only=True)
loader = ModelLoader(_s3, settings.models_bucket, settings.model_name, settings.model_cache_dir)
# Nothing heavy is imported yet: the aliases' bundles download from here on, while numpy, ONNX
# Runtime, the service and the HTTP layer import (the load below waits for this download).
prefetch = loader.prefetch(registry.aliases)

from shelfwise.pseudonym import Pseudonymiser, read_key  # noqa: E402
from shelfwise.serving.impressions import ImpressionSink  # noqa: E402
from shelfwise.serving.service import Recommender  # noqa: E402
from shelfwise.serving.stock import LiveStock, s3_fetch  # noqa: E402  (numpy: after the prefetch)

pseudonymiser = (
    Pseudonymiser(read_key(light_client("ssm"), settings.pseudonymisation_key_parameter))
    if settings.pseudonymisation_key_parameter
    else None
)

config = ServingConfig(
    model_name=settings.model_name,
    cache_dir=settings.model_cache_dir,
    alias_ttl_seconds=settings.alias_ttl_seconds,
    rules=settings.serving_rules,
    canary_mode=settings.canary_mode,
    interleave_factor=settings.interleave_factor,
)
stock = (
    LiveStock(s3_fetch(_s3, settings.catalogue_bucket, CATALOGUE_STOCK_KEY), settings.stock_ttl_seconds)
    if settings.catalogue_bucket
    else None
)
recommender = Recommender(
    config,
    loader,
    registry.aliases,
    ImpressionSink(),  # one served-list line per list on stdout (the subscription ships it)
    stock=stock,
    pseudonymise=pseudonymiser.one if pseudonymiser else None,
)
# The load starts now (the prefetch's aliases, then its bundle); the HTTP layer below is
# imported and built meanwhile.
models_loaded = recommender.start_in_background(prefetch.aliases)

from aws_lambda_powertools.logging import correlation_paths  # noqa: E402
from aws_lambda_powertools.utilities.typing import LambdaContext  # noqa: E402

from shelfwise.observability import logger, metrics, tracer  # noqa: E402
from shelfwise.serving.api import Access, build_resolver, serve  # noqa: E402
from shelfwise.serving.config import served_at  # noqa: E402
from shelfwise.serving.http import recommendations_router  # noqa: E402
from shelfwise.serving.quota import ClientQuota  # noqa: E402

# Metrics keep exactly the Variant/Endpoint dimensions of the contract, so no Powertools service
# name is configured (it would add a "service" dimension); logs still say which function wrote them.
logger.append_keys(service="serve_recommendations")
quota = (
    ClientQuota(
        light_client("dynamodb"), settings.client_usage_table, settings.client_requests_per_minute, served_at
    )
    if settings.client_usage_table
    else None
)
app = build_resolver(recommendations_router(lambda: recommender), access=Access(settings.api_auth, quota))
models_loaded()
gc.freeze()
gc.enable()


def _after_restore() -> None:
    """SnapStart (template parameter ServingSnapStart): the snapshot's credentials and aliases may
    be stale in a restored environment; drop the one and re-read the other before serving."""
    aws_lite.forget_credentials()
    recommender.after_restore()


def _before_snapshot() -> None:
    """SnapStart: put in the snapshot what first requests would compute lazily, each route's
    parameter analysis (Powertools builds it per route on first use; the OpenAPI document needs
    it for every route)."""
    app.get_openapi_schema()


try:  # the hooks library ships with Lambda's python3.12+ runtime, not elsewhere
    from snapshot_restore_py import register_after_restore, register_before_snapshot
except ImportError:
    pass
else:
    register_before_snapshot(_before_snapshot)
    register_after_restore(_after_restore)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context)
