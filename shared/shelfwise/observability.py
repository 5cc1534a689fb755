"""The Powertools trio, created once per execution environment and imported by every handler.

Service name, namespace and log level come from the standard Powertools environment variables
(``POWERTOOLS_SERVICE_NAME``, ``POWERTOOLS_METRICS_NAMESPACE``, ``POWERTOOLS_LOG_LEVEL``), which
``template.yaml`` sets in Globals.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

NAMESPACE = "Shelfwise"

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=NAMESPACE)
