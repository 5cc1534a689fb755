"""Test handler behind the local HTTP API: echoes what API Gateway would give a function."""

import json
import os
import time

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

metrics = Metrics()


@metrics.log_metrics
def lambda_handler(event, context):
    route = event["routeKey"]
    if route == "GET /boom":
        raise ValueError("boom requested")
    if route == "GET /slow":
        time.sleep(5)
    if route == "GET /latency":
        metrics.add_metric(
            name="Latency", unit=MetricUnit.Milliseconds, value=float(event["queryStringParameters"]["ms"])
        )
    body = {
        "route": route,
        "path": event["rawPath"],
        "pathParameters": event.get("pathParameters"),
        "query": event.get("queryStringParameters"),
        "body": event.get("body"),
        "isBase64Encoded": event["isBase64Encoded"],
        "stage": os.environ["STAGE"],
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "request_id": context.aws_request_id,
    }
    return {
        "statusCode": 201 if route == "POST /echo" else 200,
        "headers": {"x-test": "yes"},
        "body": json.dumps(body),
    }
