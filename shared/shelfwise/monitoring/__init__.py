"""Monitoring of served models: quality from delayed labels, drift, beyond-accuracy and pipeline health.

Modules: ``config`` (thresholds and windows, pure Python), ``quality`` (impressions joined to
feedback), ``comparison`` (challenger vs champion with anytime-valid bounds), ``drift`` (PSI,
Jensen-Shannon, coverage, Gini), ``health`` (freshness, quarantine, DLQ), ``publish``
(PutMetricData and the S3 history), ``job`` (one evaluation pass), ``report`` (HTML report).
"""
