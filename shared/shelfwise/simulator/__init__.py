"""A deterministic shop simulator: export files at any scale, a closed loop, incidents on demand.

Public API (docs/simulator.md):

- ``ShopParams``, ``Incident`` — what shapes the shop and what goes wrong when.
- ``simulate_to_files(params, seed, out_dir, fmt, split, workers)`` — export files + ground truth.
- ``Shop(params, seed)`` — catalogue, users and true tastes; ``traffic(day)``, ``respond(served,
  context)``, ``replay(day, recommender_or_url)``; reference recommenders for tests.
- ``compute_stats(table)`` — realism figures of any curated event table.
"""

from shelfwise.simulator.generate import GROUND_TRUTH_FILE, SimulationResult, simulate_to_files
from shelfwise.simulator.loop import (
    HttpRecommender,
    ReplayResult,
    RequestContext,
    Shop,
    factor_recommender,
    oracle_factors,
    popularity_recommender,
    random_recommender,
)
from shelfwise.simulator.params import INCIDENTS, Incident, ShopParams, SimulatorError
from shelfwise.simulator.stats import compute_stats, gini

__all__ = [
    "GROUND_TRUTH_FILE",
    "INCIDENTS",
    "HttpRecommender",
    "Incident",
    "ReplayResult",
    "RequestContext",
    "Shop",
    "ShopParams",
    "SimulationResult",
    "SimulatorError",
    "compute_stats",
    "factor_recommender",
    "gini",
    "oracle_factors",
    "popularity_recommender",
    "random_recommender",
    "simulate_to_files",
]
