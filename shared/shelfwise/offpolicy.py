"""Off-policy evaluation: a candidate ranker's online CTR and conversion, estimated from logged lists.

The logging policy (serving with exploration, :mod:`shelfwise.exploration`) records, for every
served slot, the probability that it put that item there (``propensity``) and whether the item's
probability is the same at every position of the list (``spread``: an item swapped in from the
exploration pool) or belongs to its position only (the model's own item at its rank). The
candidate is deterministic: for each logged list it names its own ranked list (``target``).

Two levels, three estimators each (IPS, self-normalised IPS, doubly robust):

* **position level** under the position-based click model, P(click | item i at position p) =
  ``theta[p] * gamma(x, i)`` (Li et al., "Offline evaluation of ranking policies with click
  models", KDD 2018). An item the candidate shows at position p has target examination
  ``eta_e(i) = theta[p]``; under logging, ``eta_0(i) = sum_q pi_0(i at q) * theta[q]``. Each
  logged slot gets the weight ``eta_e / eta_0`` (clipped), so an item may be credited wherever
  the log showed it. The value is expected clicks (or conversions) per list; per impression,
  divided by the candidate's list length. Support needs only that each candidate item was
  *somewhere* in the logged lists with known probability, which keeps the weights small.
* **list level**: the reward is "the list got a click"; the weight is 1 / P(logged list) when the
  candidate's list equals the logged one, else 0. Honest, and usually refused for lack of support
  (a deterministic candidate rarely matches a whole explored list): that is what the refusal is for.

Doubly robust uses a direct model of ``gamma`` per item: clicks over examination-weighted
exposures in the log, shrunk towards a prior (the click rate of the swapped-in pool items, the
items the logging policy ranks just below its lists; the log's mean when there are none). It is
context-free on purpose (the log carries no features); the importance-weighted residuals correct
it where the log has support, and it carries the rest.

Every estimate has a normal confidence interval over lists (lists are the independent unit), the
effective sample size of its weights and the share of clipped weights; an estimate is *refused*,
with the reason, when the log is too small, when the candidate's items are not covered by the
logging policy (the self-normaliser estimates the covered share of the candidate's examination)
or when the effective sample size is too small. Everything is vectorised numpy in chunks of
lists, so a million logged lists take seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from shelfwise.errors import InputError

LEVELS = ("position", "list")
ESTIMATORS = ("ips", "snips", "dr")
METRICS = ("ctr", "conversion")
# Lists per chunk: the (lists x logged slots x target slots) match cube of a chunk stays ~100 MB.
CHUNK_LISTS = 100_000


def default_examination(k: int) -> np.ndarray:
    """theta[p] = 1 / log2(p + 2): the usual position-bias prior (DCG's discount)."""
    return (1.0 / np.log2(np.arange(k, dtype=np.float64) + 2.0)).astype(np.float64)


@dataclass(frozen=True)
class OpeConfig:
    """Guards and knobs. ``clip`` caps each slot's (and each list's) importance weight."""

    clip: float = 100.0
    min_lists: int = 1000
    # IPS and SNIPS cannot extrapolate past what the log covers; DR carries the rest on its direct
    # model, so it is refused only below its own (lower) threshold.
    min_coverage: float = 0.8
    min_coverage_dr: float = 0.3
    min_ess: float = 200.0
    confidence: float = 0.95
    # Pseudo-exposures the direct model's per-item rate is shrunk with.
    prior_strength: float = 20.0

    def __post_init__(self) -> None:
        if not self.clip > 1:
            raise InputError("clip must be greater than 1")
        if not 0 < self.confidence < 1:
            raise InputError("confidence must be in (0, 1)")
        if not 0 <= self.min_coverage <= 1:
            raise InputError("min_coverage must be in [0, 1]")


@dataclass
class LoggedLists:
    """Logged lists as padded columns (``items == -1`` marks padding after a list's end).

    ``items``: item codes (n, K); ``propensity``: P(logged item at its slot) under the logging
    policy; ``spread``: the item's probability is the same at every position of its list;
    ``clicks`` / ``conversions``: 0/1 per slot; ``list_propensity``: P(the whole logged list),
    NaN when unknown (then the list level is refused).
    """

    items: np.ndarray
    propensity: np.ndarray
    spread: np.ndarray
    clicks: np.ndarray
    conversions: np.ndarray
    list_propensity: np.ndarray

    def __post_init__(self) -> None:
        self.items = np.asarray(self.items, dtype=np.int64)
        if self.items.ndim != 2:
            raise InputError("items must be a 2-D array (lists x positions)")
        shape = self.items.shape
        self.propensity = np.asarray(self.propensity, dtype=np.float64)
        self.spread = np.asarray(self.spread, dtype=bool)
        self.clicks = np.asarray(self.clicks, dtype=np.float64)
        self.conversions = np.asarray(self.conversions, dtype=np.float64)
        self.list_propensity = np.asarray(self.list_propensity, dtype=np.float64)
        for name in ("propensity", "spread", "clicks", "conversions"):
            if getattr(self, name).shape != shape:
                raise InputError(f"{name} must have the shape of items {shape}")
        if self.list_propensity.shape != (shape[0],):
            raise InputError("list_propensity must have one value per list")
        valid = self.items >= 0
        p = self.propensity[valid]
        if p.size and not (np.all(p > 0) and np.all(p <= 1)):
            raise InputError("propensities of logged slots must be in (0, 1]")

    @property
    def n(self) -> int:
        return int(self.items.shape[0])

    @classmethod
    def deterministic(
        cls, items: np.ndarray, clicks: np.ndarray, conversions: np.ndarray | None = None
    ) -> LoggedLists:
        """Lists served without exploration: every slot has probability 1."""
        items = np.asarray(items, dtype=np.int64)
        conv = np.zeros(items.shape) if conversions is None else conversions
        return cls(
            items, np.ones(items.shape), np.zeros(items.shape, bool), clicks, conv, np.ones(items.shape[0])
        )


@dataclass
class Estimate:
    estimator: str
    level: str
    metric: str
    value: float | None
    lower: float | None
    upper: float | None
    per_impression: float | None
    n_lists: int
    ess: float
    clipped_share: float
    refused: str | None = None
    # The normal interval's half-width over lists (sampling only); ``lower``/``upper`` of DR at the
    # position level add the part the log cannot check (``evaluate``), so they may be wider.
    sampling_half_width: float | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for key in (
            "value",
            "lower",
            "upper",
            "per_impression",
            "ess",
            "clipped_share",
            "sampling_half_width",
        ):
            if isinstance(d[key], float):
                d[key] = round(d[key], 6) if math.isfinite(d[key]) else None
        return d


@dataclass
class OpeReport:
    """All estimates for one candidate, with the log's own (on-policy) figures beside them."""

    n_lists: int
    coverage: float
    logged: dict[str, float]
    estimates: list[Estimate] = field(default_factory=list)

    def get(self, estimator: str, level: str = "position", metric: str = "ctr") -> Estimate:
        for e in self.estimates:
            if (e.estimator, e.level, e.metric) == (estimator, level, metric):
                return e
        raise KeyError((estimator, level, metric))

    def to_json(self) -> dict[str, Any]:
        return {
            "n_lists": self.n_lists,
            "coverage": round(self.coverage, 6),
            "logged": {k: round(v, 6) for k, v in self.logged.items()},
            "estimates": [e.to_json() for e in self.estimates],
        }


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def direct_model(
    logged: LoggedLists, theta: np.ndarray, n_items: int, reward: np.ndarray, strength: float
) -> tuple[np.ndarray, float]:
    """Per-item rate gamma-hat (examination-debiased), shrunk towards the pool items' rate."""
    valid = logged.items >= 0
    items = logged.items[valid]
    exam = np.broadcast_to(theta[: logged.items.shape[1]], logged.items.shape)[valid]
    r = reward[valid]
    exposures = np.bincount(items, weights=exam, minlength=n_items)
    hits = np.bincount(items, weights=r, minlength=n_items)
    pool = logged.spread[valid]
    base = exam[pool].sum() if pool.any() else 0.0
    prior = (r[pool].sum() / base) if base > 0 else (hits.sum() / max(exposures.sum(), 1e-12))
    prior = float(min(max(prior, 0.0), 1.0))
    return np.clip((hits + strength * prior) / (exposures + strength), 0.0, 1.0), prior


@dataclass
class DirectModel:
    """A caller's direct model: gamma-hat per target slot (n, K_e) and per logged slot (n, K), per metric."""

    target: dict[str, np.ndarray]
    logged: dict[str, np.ndarray]


def poisson_log_fit(x: np.ndarray, exposure: np.ndarray, hits: np.ndarray, steps: int = 50) -> np.ndarray:
    """Coefficients of ``hits ~ Poisson(exposure * exp(x @ beta))`` by Newton's method (IRLS).

    A few features over aggregated cells, so a hand-written Newton step is enough; ``lstsq`` keeps
    it defined when features coincide (a candidate's ranks equal to the logging model's)."""
    keep = exposure > 0
    x, e, h = x[keep], exposure[keep], hits[keep]
    beta = np.zeros(x.shape[1])
    beta[0] = math.log(max(h.sum(), 1e-12) / max(e.sum(), 1e-12))

    def loss(b: np.ndarray) -> float:
        eta = np.clip(x @ b, -30.0, 30.0)
        return float((e * np.exp(eta) - h * eta).sum())

    current = loss(beta)
    for _ in range(steps):
        mu = e * np.exp(np.clip(x @ beta, -30.0, 30.0))
        grad = x.T @ (h - mu)
        hess = (x * mu[:, None]).T @ x
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        t = 1.0
        while t > 1e-6:
            trial = beta + t * step
            got = loss(trial)
            if got <= current:
                break
            t /= 2
        else:
            break
        done = current - got < 1e-10 * max(abs(current), 1.0)
        beta, current = trial, got
        if done:
            break
    return beta


def rank_direct_model(
    logged: LoggedLists,
    ranks_logged: np.ndarray,
    ranks_target: np.ndarray,
    theta: np.ndarray | None = None,
    max_rank: int = 200,
    candidate_ranks_logged: np.ndarray | None = None,
    scale: str = "log",
    n_ranked: int | None = None,
) -> DirectModel:
    """A direct model from the logging model's own ranking: gamma-hat by the rank the logging
    model gives the item for that shopper (a context-aware model the log can fit).

    ``ranks_*``: the logging model's rank of each logged / target item for that list's shopper
    (``max_rank`` or more when beyond its top ``max_rank``). Rates come from the logged slots by rank
    (examination-debiased); ranks never shown (beyond the exploration pool) are extrapolated with a
    least-squares fit of log rate on log(rank + 1) over the shown ranks, weighted by exposure.

    With ``candidate_ranks_logged`` (the candidate's own rank of each logged item for that shopper;
    the target's are its positions), the rate is a function of both ranks: a Poisson fit of
    log rate on log(logging rank + 1) and log(candidate rank + 1) over the logged slots
    (examination as exposure), and each (logging rank, candidate rank) cell the log showed keeps its
    own rate shrunk towards the fit. Beyond the pool, a candidate's top picks are then rated by how
    the log's clicks follow the candidate's ranking, not only the logging model's.
    """
    k = logged.items.shape[1]
    th = (
        default_examination(max(k, ranks_target.shape[1]))
        if theta is None
        else np.asarray(theta, dtype=np.float64)
    )
    valid = logged.items >= 0
    rl = np.minimum(np.asarray(ranks_logged, dtype=np.int64), max_rank)
    rt = np.minimum(np.asarray(ranks_target, dtype=np.int64), max_rank)
    exam = np.broadcast_to(th[:k], logged.items.shape)[valid]
    strength = 20.0  # pseudo-exposures a shown cell's own rate is shrunk with
    if candidate_ranks_logged is not None:
        return _two_rank_model(
            logged, rl, rt, exam, valid, candidate_ranks_logged, max_rank, strength, scale, n_ranked
        )
    ranks = rl[valid]
    exposures = np.bincount(ranks, weights=exam, minlength=max_rank + 1)
    out_t: dict[str, np.ndarray] = {}
    out_l: dict[str, np.ndarray] = {}
    for m, reward in (("ctr", logged.clicks), ("conversion", logged.conversions)):
        hits = np.bincount(ranks, weights=reward[valid], minlength=max_rank + 1)
        seen = (exposures > 0) & (np.arange(max_rank + 1) < max_rank)
        rate = np.zeros(max_rank + 1)
        rate[seen] = hits[seen] / exposures[seen]
        fit = seen & (hits > 0)
        if fit.sum() >= 2:
            x = np.log(np.flatnonzero(fit) + 1.0)
            y = np.log(rate[fit])
            wts = exposures[fit]
            b, a = np.polyfit(x, y, 1, w=np.sqrt(wts))
            curve = np.exp(a + b * np.log(np.arange(max_rank + 1) + 1.0))
        else:
            mean = hits.sum() / max(exposures.sum(), 1e-12)
            curve = np.full(max_rank + 1, mean)
        # shown ranks keep their own rate, shrunk towards the curve by their exposure
        table = np.where(seen, (hits + strength * curve) / (exposures + strength), curve)
        table = np.clip(table, 0.0, 1.0)
        out_t[m] = table[rt]
        out_l[m] = table[rl]
    return DirectModel(out_t, out_l)


def rank_feature(max_rank: int, scale: str = "log", n_ranked: int | None = None) -> np.ndarray:
    """A rank's value as a regression feature, for ranks 0..max_rank (max_rank: beyond the top).

    ``log``: log(rank + 1). ``normal``: the normal quantile of the rank among ``n_ranked`` items
    (a rank-based inverse normal transform, the score a rank stands for when scores are normal);
    beyond the top ``max_rank``, the mean quantile of the ranks below."""
    if scale == "log":
        return np.log(np.arange(max_rank + 1) + 1.0)
    if scale != "normal":
        raise InputError(f"unknown rank scale {scale!r} (log or normal)")
    if n_ranked is None or n_ranked <= max_rank:
        raise InputError(f"the normal rank scale needs the number of ranked items (> {max_rank})")
    from statistics import NormalDist

    nd = NormalDist()
    z = [nd.inv_cdf(1.0 - (r + 0.5) / n_ranked) for r in range(max_rank)]
    edge = nd.inv_cdf(1.0 - max_rank / n_ranked)
    z.append(-nd.pdf(edge) / nd.cdf(edge))  # E[z | z < edge]: the rest of the catalogue
    return np.asarray(z)


def _two_rank_model(
    logged: LoggedLists,
    rl: np.ndarray,
    rt: np.ndarray,
    exam: np.ndarray,
    valid: np.ndarray,
    candidate_ranks_logged: np.ndarray,
    max_rank: int,
    strength: float,
    scale: str,
    n_ranked: int | None,
) -> DirectModel:
    """:func:`rank_direct_model` with the candidate's own rank as a second feature."""
    side = max_rank + 1
    cl = np.minimum(np.asarray(candidate_ranks_logged, dtype=np.int64), max_rank)
    if cl.shape != rl.shape:
        raise InputError(f"candidate_ranks_logged must have the shape of the logged lists {rl.shape}")
    ct = np.broadcast_to(np.minimum(np.arange(rt.shape[1]), max_rank), rt.shape)
    cell_l = rl * side + cl
    cell_t = rt * side + ct
    cells = cell_l[valid]
    exposures = np.bincount(cells, weights=exam, minlength=side * side)
    grid = np.arange(side * side)
    feature = rank_feature(max_rank, scale, n_ranked)
    x = np.column_stack([np.ones(grid.size), feature[grid // side], feature[grid % side]])
    out_t: dict[str, np.ndarray] = {}
    out_l: dict[str, np.ndarray] = {}
    for m, reward in (("ctr", logged.clicks), ("conversion", logged.conversions)):
        hits = np.bincount(cells, weights=reward[valid], minlength=side * side)
        if hits.sum() > 0:
            curve = np.exp(np.clip(x @ poisson_log_fit(x, exposures, hits), -30.0, 0.0))
        else:
            curve = np.zeros(side * side)
        table = np.clip((hits + strength * curve) / (exposures + strength), 0.0, 1.0)
        out_t[m] = table[cell_t]
        out_l[m] = table[cell_l]
    return DirectModel(out_t, out_l)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def evaluate(
    logged: LoggedLists,
    target: np.ndarray,
    *,
    theta: np.ndarray | None = None,
    config: OpeConfig | None = None,
    n_items: int | None = None,
    direct: DirectModel | None = None,
) -> OpeReport:
    """Every estimator, at both levels, for CTR and conversion, of the candidate's lists ``target``.

    ``target`` holds the candidate's item codes per logged list (n, K_e), -1 after its end.
    """
    cfg = config or OpeConfig()
    target = np.asarray(target, dtype=np.int64)
    if target.ndim != 2 or target.shape[0] != logged.n:
        raise InputError(f"target must have one row per logged list ({logged.n}), got shape {target.shape}")
    n, k_log = logged.items.shape
    k_e = target.shape[1]
    width = max(k_log, k_e)
    th = default_examination(width) if theta is None else np.asarray(theta, dtype=np.float64)
    if th.shape[0] < width or not np.all(th[:width] > 0):
        raise InputError(f"theta needs a positive value for each of {width} positions")
    th = th[:width]
    if n_items is None:
        n_items = int(max(logged.items.max(initial=-1), target.max(initial=-1))) + 1
    valid = logged.items >= 0
    lengths = valid.sum(axis=1)
    t_valid = target >= 0
    t_len = t_valid.sum(axis=1).astype(np.float64)
    models = {
        "ctr": direct_model(logged, th, n_items, logged.clicks, cfg.prior_strength),
        "conversion": direct_model(logged, th, n_items, logged.conversions, cfg.prior_strength),
    }
    gammas = {m: g for m, (g, _) in models.items()}
    rewards = {"ctr": logged.clicks, "conversion": logged.conversions}

    # Per-list sums, filled chunk by chunk.
    ips = {m: np.zeros(n) for m in METRICS}
    dr = {m: np.zeros(n) for m in METRICS}
    dm_sum = {m: 0.0 for m in METRICS}  # the direct model's clicks on the candidate's lists
    dm_range: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    norm = np.zeros(n)  # sum_q w_q theta_q: E = candidate's examination on covered items
    slot_clipped = 0
    slot_nonzero = 0
    list_match = np.zeros(n, bool)
    theta_e = np.where(t_valid, th[None, :k_e], 0.0)
    t_exam = theta_e.sum(axis=1)
    for sl in _chunks(n, CHUNK_LISTS):
        items = logged.items[sl]
        v = valid[sl]
        exam_q = np.where(v, th[None, :k_log], 0.0)
        spread_total = exam_q.sum(axis=1, keepdims=True)
        eta0 = logged.propensity[sl] * np.where(logged.spread[sl], spread_total, exam_q)
        match = (items[:, :, None] == target[sl][:, None, :]) & v[:, :, None]
        eta_e = (match * theta_e[sl][:, None, :]).sum(axis=2)
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(v, eta_e / eta0, 0.0)
        over = w > cfg.clip
        slot_clipped += int(over.sum())
        slot_nonzero += int((w > 0).sum())
        w = np.minimum(w, cfg.clip)
        norm[sl] = (w * exam_q).sum(axis=1)
        for m in METRICS:
            r = rewards[m][sl]
            g = gammas[m]
            ips[m][sl] = (w * r).sum(axis=1)
            if direct is not None:
                g_t, g_l = direct.target[m][sl], direct.logged[m][sl]
            else:
                g_t = g[np.where(t_valid[sl], target[sl], 0)]
                g_l = g[np.where(v, items, 0)]
            dm_target = (theta_e[sl] * np.where(t_valid[sl], g_t, 0.0)).sum(axis=1)
            dm_sum[m] += float(dm_target.sum())
            shown = np.asarray(g_l)[v]
            dm_range[m].append(shown[:: max(1, shown.size // 100_000)])  # a sample bounds the memory
            dm_logged = exam_q * g_l
            dr[m][sl] = dm_target + (w * (r - dm_logged)).sum(axis=1)
        # List level: the candidate's list is the logged list (same items, same order, same length).
        same_len = lengths[sl] == t_len[sl]
        width_c = min(k_log, k_e)
        eq = (items[:, :width_c] == target[sl][:, :width_c]).all(axis=1)
        rest_log = (~v[:, width_c:]).all(axis=1) if k_log > width_c else True
        rest_t = (~t_valid[sl][:, width_c:]).all(axis=1) if k_e > width_c else True
        list_match[sl] = same_len & eq & rest_log & rest_t

    z = _z(cfg.confidence)
    coverage = float(norm.sum() / t_exam.sum()) if t_exam.sum() > 0 else 0.0
    # Normalise the per-list weight mass by the candidate's examination, so one fully covered list
    # counts one in the effective sample size.
    mass = norm / np.where(t_exam > 0, t_exam, 1.0)
    ess_pos = float(mass.sum() ** 2 / max((mass**2).sum(), 1e-300))
    clipped_share = slot_clipped / max(slot_nonzero, 1)
    mean_len = float(t_len.mean()) if n else 0.0

    def refusal(min_cov: float) -> str | None:
        if n < cfg.min_lists:
            return f"sample size: {n} logged lists, at least {cfg.min_lists} needed"
        if coverage < min_cov:
            return (
                f"support: the logging policy covers {coverage:.1%} of the candidate's examined slots "
                f"(at least {min_cov:.0%} needed); its lists hold items the log never showed"
            )
        if ess_pos < cfg.min_ess:
            return f"support: effective sample size {ess_pos:.0f} < {cfg.min_ess:.0f}"
        return None

    pos_reason = refusal(cfg.min_coverage)
    dr_reason = refusal(cfg.min_coverage_dr)

    report = OpeReport(
        n_lists=n,
        coverage=coverage,
        logged={
            "clicks_per_list": float(logged.clicks[valid].sum() / max(n, 1)),
            "ctr": float(logged.clicks[valid].mean()) if valid.any() else 0.0,
            "list_ctr": float((logged.clicks * valid).max(axis=1).mean()) if n else 0.0,
            "conversion": float(logged.conversions[valid].mean()) if valid.any() else 0.0,
        },
    )

    def add(
        est: str,
        level: str,
        metric: str,
        value: float,
        var: float,
        ess: float,
        clip: float,
        why: str | None,
        per: float,
        unchecked: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        half = z * math.sqrt(max(var, 0.0) / max(n, 1))
        ok = why is None and math.isfinite(value)
        report.estimates.append(
            Estimate(
                est,
                level,
                metric,
                value if ok else None,
                value - half - unchecked[0] if ok else None,
                value + half + unchecked[1] if ok else None,
                value / per if ok and per > 0 else None,
                n,
                ess,
                clip,
                why if why is not None else (None if ok else "no finite estimate"),
                half if ok else None,
            )
        )

    # DR carries the candidate's examination the log does not cover on its direct model alone, and
    # no residual checks it there: the interval adds what those slots could be worth within the
    # range of rates the direct model gives the logged slots (5th to 95th percentile), below and
    # above the rate it assumed for them. Zero at full coverage.
    uncovered = max(float(t_exam.mean()) - float(norm.mean()), 0.0) if n else 0.0

    def unchecked(m: str) -> tuple[float, float]:
        rates = np.concatenate(dm_range[m]) if dm_range[m] else np.zeros(0)
        if uncovered <= 0 or rates.size == 0 or t_exam.sum() <= 0:
            return 0.0, 0.0
        assumed = dm_sum[m] / float(t_exam.sum())
        lo, hi = np.quantile(rates, [0.05, 0.95])
        return uncovered * max(assumed - float(lo), 0.0), uncovered * max(float(hi) - assumed, 0.0)

    for m in METRICS:
        v_ips = ips[m]
        add(
            "ips",
            "position",
            m,
            float(v_ips.mean()) if n else math.nan,
            float(v_ips.var()),
            ess_pos,
            clipped_share,
            pos_reason,
            mean_len,
        )
        s = mass
        s_mean = float(s.mean()) if n else 0.0
        if s_mean > 0:
            snips = float(v_ips.mean() / s_mean)
            var = float(((v_ips - snips * s) ** 2).mean() / s_mean**2)
        else:
            snips, var = math.nan, math.nan
        add("snips", "position", m, snips, var, ess_pos, clipped_share, pos_reason, mean_len)
        add(
            "dr",
            "position",
            m,
            float(dr[m].mean()) if n else math.nan,
            float(dr[m].var()),
            ess_pos,
            clipped_share,
            dr_reason,
            mean_len,
            unchecked(m),
        )

    # ---- list level: reward = the list got a click (or a conversion)
    lp = logged.list_propensity
    known = np.isfinite(lp) & (lp > 0)
    with np.errstate(divide="ignore"):
        wl_raw = np.where(list_match & known, 1.0 / np.where(known, lp, 1.0), 0.0)
    list_clipped = int((wl_raw > cfg.clip).sum()) / max(int((wl_raw > 0).sum()), 1)
    wl = np.minimum(wl_raw, cfg.clip)
    ess_list = float(wl.sum() ** 2 / max((wl**2).sum(), 1e-300))
    list_reason = pos_reason if pos_reason and pos_reason.startswith("sample") else None
    if list_reason is None and not known.all():
        list_reason = f"support: {int((~known).sum())} logged lists carry no list propensity"
    if list_reason is None and ess_list < cfg.min_ess:
        list_reason = (
            f"support: the candidate's whole list equals a logged list in {int(list_match.sum())} of {n} "
            f"lists (effective sample size {ess_list:.0f} < {cfg.min_ess:.0f})"
        )
    for m in METRICS:
        r_list = (rewards[m] * valid).max(axis=1)
        g = gammas[m]
        safe_t = np.where(t_valid, target, 0)
        g_t_all = direct.target[m] if direct is not None else g[safe_t]
        g_l_all = direct.logged[m] if direct is not None else g[np.where(valid, logged.items, 0)]
        q_target = 1.0 - np.prod(np.where(t_valid, 1.0 - theta_e * g_t_all, 1.0), axis=1)
        exam_all = np.where(valid, th[None, :k_log], 0.0)
        q_logged = 1.0 - np.prod(np.where(valid, 1.0 - exam_all * g_l_all, 1.0), axis=1)
        v_ips = wl * r_list
        add(
            "ips",
            "list",
            m,
            float(v_ips.mean()) if n else math.nan,
            float(v_ips.var()),
            ess_list,
            list_clipped,
            list_reason,
            1.0,
        )
        wm = float(wl.mean()) if n else 0.0
        if wm > 0:
            sn = float(v_ips.mean() / wm)
            var = float(((v_ips - sn * wl) ** 2).mean() / wm**2)
        else:
            sn, var = math.nan, math.nan
        add("snips", "list", m, sn, var, ess_list, list_clipped, list_reason, 1.0)
        v_dr = q_target + wl * (r_list - q_logged)
        add(
            "dr",
            "list",
            m,
            float(v_dr.mean()) if n else math.nan,
            float(v_dr.var()),
            ess_list,
            list_clipped,
            list_reason,
            1.0,
        )
    return report


def estimate_examination(logged: LoggedLists, k: int, min_clicks: int = 200) -> np.ndarray | None:
    """theta from the exploration itself: swapped-in pool items land at every position with the
    same probability, so their click rate by position is proportional to theta (theta[0] = 1).
    None when the swapped slots have fewer than ``min_clicks`` clicks, or a position has none."""
    valid = (logged.items >= 0) & logged.spread
    if logged.clicks[valid].sum() < min_clicks:
        return None
    shown = valid[:, :k].sum(axis=0).astype(np.float64)
    clicked = (logged.clicks[:, :k] * valid[:, :k]).sum(axis=0)
    if np.any(shown == 0) or np.any(clicked == 0):
        return None
    rate = clicked / shown
    return np.asarray(rate / rate[0], dtype=np.float64)


def codes(*columns: Sequence[Any] | np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Item ids of several columns as shared integer codes (and the vocabulary)."""
    arrays = [np.asarray(c) for c in columns]
    vocab, inverse = np.unique(np.concatenate([a.ravel() for a in arrays]), return_inverse=True)
    out = []
    start = 0
    for a in arrays:
        out.append(inverse[start : start + a.size].reshape(a.shape).astype(np.int64))
        start += a.size
    return out, vocab


@dataclass
class ExplorationCost:
    """What exploration costs: the logged clicks per list against the policy's own ranked lists."""

    n_lists: int
    explored_slots: float  # share of logged slots that showed a pool item
    logged: float  # clicks (or conversions) per list as served
    ranked: float  # the same lists as ranked, estimated from the slots exploration kept
    cost: float  # 1 - logged / ranked: the relative loss
    lower: float
    upper: float

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def exploration_cost(
    logged: LoggedLists, reward: str = "clicks", confidence: float = 0.95
) -> ExplorationCost | None:
    """The relative CTR cost of exploration, from the explored log alone (None without lists).

    The lists the policy would have served without exploring put the model's own item at every
    slot; each kept slot is that item, shown with probability ``propensity``, so
    ``sum(clicks / propensity)`` over kept slots is an unbiased estimate (IPS) of the ranked
    list's clicks, with no assumption about the click model. Interval: delta method on the ratio.
    """
    n = logged.n
    if n == 0:
        return None
    valid = logged.items >= 0
    r = logged.clicks if reward == "clicks" else logged.conversions
    a = (r * valid).sum(axis=1)
    kept = valid & ~logged.spread
    b = np.where(kept, r / logged.propensity, 0.0).sum(axis=1)
    mb = float(b.mean())
    explored = float((logged.spread & valid).sum() / max(int(valid.sum()), 1))
    if mb <= 0:
        return ExplorationCost(n, explored, float(a.mean()), mb, math.nan, math.nan, math.nan)
    ratio = float(a.mean()) / mb
    half = _z(confidence) * math.sqrt(float(((a - ratio * b) ** 2).mean()) / n) / mb
    return ExplorationCost(n, explored, float(a.mean()), mb, 1 - ratio, 1 - ratio - half, 1 - ratio + half)
