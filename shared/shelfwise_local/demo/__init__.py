"""``shelfwise demo``: the whole loop of the platform, locally, on a simulated shop.

template.yaml runs in the local runtime (embedded moto by default, or LocalStack) with one clock
that the demo drives and the simulated shop follows:

    shop exports + catalogue -> RawBucket raw/ -> ingest -> train v1 (champion)
    -> an item sells out (raw/catalogue/) -> it leaves the served lists, no retraining
    -> traffic through the HTTP API (feedback -> Firehose -> raw -> ingest; impressions as
       served-list log lines -> subscription filter -> Firehose -> raw -> ingest),
       ComputeMetrics and PromoteModel every 5 minutes
    -> "yesterday's" export + feedback -> train v2 -> canary 10% -> 50% -> 100% -> promoted
    -> broken v3 (v2 with shuffled item scores) -> canary -> alarm -> RollbackModelFunction (SNS)
    -> taste drift in the shop -> ChampionCtrDropLCB alarm

A readable timeline goes to stderr, the HTML monitoring report to a file, and one JSON line to
stdout; the exit code is 1 when an expectation fails (2 for bad arguments).

The package, in the order of a run: ``config`` (sizes and the demo's settings), ``scenario``
(the runtime, the shop and its traffic, one window at a time), ``phases`` (v1, stock, v2's
canary, the broken v3, taste drift), ``broken`` (the broken bundle), ``run`` (the run and its
result, and the checks on it) and ``cli`` (``shelfwise demo``).
"""

from shelfwise_local.demo.cli import main

__all__ = ["main"]
