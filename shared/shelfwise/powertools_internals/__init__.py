"""Every place Shelfwise reaches into Powertools' private internals, in one package.

Written against aws-lambda-powertools ``PINNED_VERSION`` (``tests/unit/test_powertools_internals.py``
fails on any other version: re-read the Powertools code each part names, adjust, then bump the
pin). Each part keeps Powertools' behaviour and removes a per-request cost measured on the serving
path (see docs/serving.md). Two modules, so a function without an HTTP API never imports
Powertools' event handler:

- ``metrics.EMFProvider``: subclasses the CloudWatch EMF provider, overrides
  ``add_metric``/``flush_metrics`` and reads its private ``_metric_units`` and
  ``_metric_unit_valid_options``; ``metrics.lean_metrics`` shares ``Metrics``' class-level state
  (``Metrics._metrics``, ``_dimensions``, ``_metadata``, ``_default_dimensions``).
- ``http.RequestValidation``: Powertools' request-validation middleware ``handler`` with
  each route's parameter kinds cached, built from the private helpers of
  ``event_handler.middlewares.openapi_validation`` (``_request_params_to_args``,
  ``_process_scalar_param`` ...).
- ``http.LeanResponseBuilder``: overrides the response builder's private
  ``_has_compression_enabled``.
- ``http.use_lean_validation_and_responses`` sets the resolver's private
  ``_request_validation_middleware`` and ``_response_builder_class`` slots.

Where the gain is not worth this coupling, use the public Powertools API instead.
"""

PINNED_VERSION = "3.37.0"
