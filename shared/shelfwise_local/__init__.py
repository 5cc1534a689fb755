"""Development tooling for Shelfwise: the local runtime, benchmarks and the demo.

Never shipped to Lambda (the ShelfwiseLayer copies only ``shared/shelfwise``), and nothing in
``shelfwise`` imports it; its commands reach the ``shelfwise`` CLI through entry points.
"""
