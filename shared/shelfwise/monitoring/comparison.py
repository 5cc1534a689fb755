"""Challenger vs champion: the rate ratio with an anytime-valid confidence bound.

The alarm watches one published number, ``DropLCB`` = a lower confidence bound of the relative
drop ``1 - rate_challenger / rate_champion``. It is positive only once the data show, with the
configured confidence, that the challenger is worse; it is recomputed every window on cumulative
counts since the canary started, so it is looked at hundreds of times. A fixed-z interval would
false-alarm under such repeated looks, so the bound is a normal-mixture confidence sequence
(Robbins 1970; the mSPRT of Johari et al. 2017) on the log ratio, valid simultaneously over all
looks: P(the bound ever exceeds the true drop) <= alpha.

The alarm only ever asks one question, "is the challenger worse?", so each bound is one-sided: the
mixture is a half-normal over effects in the direction the bound guards against. That is the same
martingale argument (a mixture of likelihood ratios has mean 1; Ville's inequality), and about
halves the evidence needed at the boundary compared with the two-sided mixture at the same alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RatioBound:
    """Estimate and anytime-valid bounds of ``rate_challenger / rate_champion``."""

    ratio: float
    lower: float
    upper: float
    x_challenger: int
    n_challenger: int
    x_champion: int
    n_champion: int

    @property
    def drop_lcb(self) -> float:
        """Lower confidence bound of the relative drop (>0: the challenger is surely worse)."""
        return 1.0 - self.upper

    @property
    def drop(self) -> float:
        return 1.0 - self.ratio


def mixture_halfwidth(variance: float, alpha: float, tau: float) -> float:
    """Half-width of the normal-mixture confidence sequence for an estimate with ``variance``.

    With a N(0, tau^2) mixture over the effect, the mixture likelihood ratio crosses 1/alpha when
    ``theta_hat^2 >= 2 v (v + tau^2) / tau^2 * (log(1/alpha) + log((v + tau^2) / v) / 2)``.
    """
    if variance <= 0 or alpha <= 0 or alpha >= 1 or tau <= 0:
        raise ValueError("variance and tau must be positive, 0 < alpha < 1")
    v, t2 = variance, tau * tau
    return math.sqrt(2.0 * v * (v + t2) / t2 * (math.log(1.0 / alpha) + 0.5 * math.log((v + t2) / v)))


def _log_norm_cdf(z: float) -> float:
    return math.log(max(0.5 * math.erfc(-z / math.sqrt(2.0)), 1e-300))


def one_sided_halfwidth(variance: float, alpha: float, tau: float) -> float:
    """Half-width of the one-sided normal-mixture confidence sequence (half-normal mixing density).

    For an estimate ``theta_hat ~ N(theta, v)`` and the null ``theta = theta0 = theta_hat + w``,
    the mixture of likelihood ratios over alternatives below ``theta0`` with density
    ``2 phi(lambda / tau) / tau`` (lambda < 0) is, with ``s^2 = v (v + tau^2) / tau^2``:
    ``M(w) = 2 sqrt(v / (v + tau^2)) exp(w^2 / (2 s^2)) Phi(w / s)``. ``M`` is a nonnegative
    martingale with mean 1 under the null, so the upper bound ``theta_hat + w`` with ``M(w) = 1/alpha``
    is exceeded by the truth with probability <= alpha over all looks. Solved by bisection on
    ``[0, two-sided half-width]`` (``2 Phi >= 1`` there, so the one-sided width is never wider).
    """
    hi = mixture_halfwidth(variance, alpha, tau)
    v, t2 = variance, tau * tau
    s = math.sqrt(v * (v + t2) / t2)
    target = math.log(1.0 / alpha)
    base = math.log(2.0) - 0.5 * math.log((v + t2) / v)

    def log_m(w: float) -> float:
        return base + w * w / (2.0 * s * s) + _log_norm_cdf(w / s)

    lo = 0.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if log_m(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def compare_rates(
    x_challenger: int,
    n_challenger: int,
    x_champion: int,
    n_champion: int,
    alpha: float,
    tau: float,
    margin: float = 0.0,
) -> RatioBound:
    """Ratio of two binomial rates with one-sided confidence-sequence bounds on the log scale.

    ``upper`` and ``lower`` are each a one-sided bound at ``alpha`` (the alarm uses ``upper``).

    The variance of the log ratio is evaluated where the alarm decides: at a challenger rate of
    ``(1 - margin)`` times the champion's (a score-type statistic). The plug-in (Katz) variance
    explodes exactly when a broken model gets almost no clicks (1/x with x near 0) and would hide
    the worst failures; the variance at the decision boundary keeps the false-alarm guarantee where
    it matters and stays finite. A 0.5 continuity correction keeps zero counts finite.
    """
    if n_challenger <= 0 or n_champion <= 0:
        raise ValueError("both variants need at least one trial")
    if not (0 <= x_challenger <= n_challenger and 0 <= x_champion <= n_champion):
        raise ValueError("successes must lie between 0 and the number of trials")
    if not 0 <= margin < 1:
        raise ValueError("margin must be in [0, 1)")
    xc, nc = x_challenger + 0.5, n_challenger + 0.5
    xb, nb = x_champion + 0.5, n_champion + 0.5
    q_b = xb / nb
    q_c = (1.0 - margin) * q_b
    log_ratio = math.log((xc / nc) / q_b)
    variance = max((1.0 - q_c) / (nc * q_c) + (1.0 - q_b) / (nb * q_b), 1e-12)
    w = one_sided_halfwidth(variance, alpha, tau)
    return RatioBound(
        ratio=_exp(log_ratio),
        lower=_exp(log_ratio - w),
        upper=_exp(log_ratio + w),
        x_challenger=x_challenger,
        n_challenger=n_challenger,
        x_champion=x_champion,
        n_champion=n_champion,
    )


def _exp(x: float) -> float:
    """exp clamped to the float range (extreme counts give astronomically wide bounds)."""
    return math.exp(max(-700.0, min(700.0, x)))


def guarded_compare(
    x_challenger: int,
    n_challenger: int,
    x_champion: int,
    n_champion: int,
    *,
    alpha: float,
    tau: float,
    min_lists: int,
    min_champion_successes: int,
    margin: float = 0.0,
) -> RatioBound | None:
    """``compare_rates`` behind the minimum-sample guard: None means "not enough evidence yet".

    The guard keeps the normal approximation honest; the job publishes nothing when it returns
    None, and the alarm treats the missing datapoint as not breaching.
    """
    if min(n_challenger, n_champion) < min_lists or x_champion < min_champion_successes:
        return None
    return compare_rates(x_challenger, n_challenger, x_champion, n_champion, alpha, tau, margin)


def expected_drop_lcb(
    base_rate: float,
    drop: float,
    challenger_lists: int,
    share: float,
    alpha: float,
    tau: float,
    margin: float = 0.0,
) -> float:
    """The drop LCB expected after ``challenger_lists`` lists at canary ``share`` (planning aid)."""
    n_c = max(1, int(challenger_lists))
    n_b = max(1, round(n_c * (1.0 - share) / share))
    x_c = round(n_c * base_rate * (1.0 - drop))
    x_b = round(n_b * base_rate)
    return compare_rates(x_c, n_c, x_b, n_b, alpha, tau, margin).drop_lcb


def lists_needed(base_rate: float, drop: float, share: float, margin: float, alpha: float, tau: float) -> int:
    """Challenger lists needed before a true relative ``drop`` pushes the expected LCB past ``margin``.

    Lets the demo size its traffic: e.g. a 20% drop at 10% canary and 20% list CTR.
    """
    lo, hi = 1, 1
    while expected_drop_lcb(base_rate, drop, hi, share, alpha, tau, margin) <= margin:
        hi *= 2
        if hi > 10**9:
            raise ValueError("drop too small to detect against this margin")
    while lo < hi:
        mid = (lo + hi) // 2
        if expected_drop_lcb(base_rate, drop, mid, share, alpha, tau, margin) > margin:
            hi = mid
        else:
            lo = mid + 1
    return lo


def compare_preference(
    wins_challenger: int,
    wins_champion: int,
    alpha: float,
    tau: float,
    margin: float = 0.0,
) -> RatioBound:
    """Interleaving: the challenger's win odds over decisive lists, with one-sided anytime-valid bounds.

    In a team-drafted list both models place the same number of items in alternating positions, so
    a click's credit is a coin flip under the null of equal models, whoever the shopper is. With
    ``p`` the challenger's share of decisive lists, ``r = p / (1 - p)`` estimates the ratio of the
    two rankings' click rates (it is exactly that ratio when a list gets one click and clicks follow
    the items' attractiveness), so the bounds read like :func:`compare_rates`'s and feed the same
    ``DropLCB`` alarm. The log-odds estimate is bounded with the same half-normal mixture, its
    variance ``1 / (n p0 (1 - p0))`` taken at the decision boundary ``r0 = 1 - margin`` (score-test
    construction: finite when the challenger wins nothing), 0.5 continuity correction.
    """
    if wins_challenger < 0 or wins_champion < 0:
        raise ValueError("wins must be non-negative")
    if not 0 <= margin < 1:
        raise ValueError("margin must be in [0, 1)")
    n = wins_challenger + wins_champion
    if n <= 0:
        raise ValueError("no decisive list")
    r0 = 1.0 - margin
    p0 = r0 / (1.0 + r0)
    log_odds = math.log((wins_challenger + 0.5) / (wins_champion + 0.5))
    variance = 1.0 / ((n + 1.0) * p0 * (1.0 - p0))
    w = one_sided_halfwidth(variance, alpha, tau)
    return RatioBound(
        ratio=_exp(log_odds),
        lower=_exp(log_odds - w),
        upper=_exp(log_odds + w),
        x_challenger=wins_challenger,
        n_challenger=n,
        x_champion=wins_champion,
        n_champion=n,
    )


def guarded_preference(
    wins_challenger: int,
    wins_champion: int,
    *,
    alpha: float,
    tau: float,
    min_decisive: int,
    margin: float = 0.0,
) -> RatioBound | None:
    """``compare_preference`` behind a minimum of decisive lists (None: not enough evidence yet)."""
    if wins_challenger + wins_champion < max(min_decisive, 1):
        return None
    return compare_preference(wins_challenger, wins_champion, alpha, tau, margin)


# Per-shopper sums of one arm (split canary), in this order: shoppers, lists, clicked lists, and
# the products the delta method and the covariate adjustment need (x = the shopper's pre-canary
# excess clicked lists, ``pre_clicked - pre_rate * pre_lists``; 0 for a shopper without history).
USER_SUM_FIELDS = ("users", "n", "y", "nn", "yy", "ny", "x", "xx", "xy", "xn")


def user_sums(n: object, y: object, x: object) -> list[float]:
    """The :data:`USER_SUM_FIELDS` of per-shopper arrays (lists, clicked lists, covariate)."""
    n_a = np.asarray(n, dtype=np.float64)
    y_a = np.asarray(y, dtype=np.float64)
    x_a = np.asarray(x, dtype=np.float64)
    return [
        float(n_a.size),
        float(n_a.sum()),
        float(y_a.sum()),
        float(n_a @ n_a),
        float(y_a @ y_a),
        float(n_a @ y_a),
        float(x_a.sum()),
        float(x_a @ x_a),
        float(x_a @ y_a),
        float(x_a @ n_a),
    ]


@dataclass(frozen=True)
class AdjustedRate:
    """One arm's list CTR over shoppers: plain, covariate-adjusted, and the adjusted one's variance."""

    rate: float
    adjusted: float
    variance: float
    variance_unadjusted: float
    users: int
    lists: int
    clicked: int


def _arm_moments(s: list[float]) -> tuple[float, float, float, float, float]:
    """(rate, var of the linearised shopper term, its covariance with x, var of x, mean of x)."""
    users, n, y, nn, yy, ny, x, xx, xy, xn = s
    rate = y / n
    nbar = n / users
    var_l = max(yy - 2 * rate * ny + rate * rate * nn, 0.0) / (nbar * nbar * users)
    cov = (xy - rate * xn) / (nbar * users)
    xbar = x / users
    var_x = max(xx / users - xbar * xbar, 0.0)
    return rate, var_l, cov, var_x, xbar


def adjusted_rates(challenger: list[float], champion: list[float]) -> tuple[AdjustedRate, AdjustedRate]:
    """Both arms' list CTRs with shoppers as the unit (delta method) and CUPED's adjustment.

    A shopper's lists are correlated (the same taste, the same habit of clicking), so the variance
    of a ratio of sums is taken over shoppers: ``var(y - R n) / (n_bar^2 * users)`` (Deng, Knoblich
    and Lu 2018). The adjustment (CUPED, Deng et al. 2013) subtracts ``theta * (x_bar_arm -
    x_bar)``, with ``x`` each shopper's pre-canary excess clicks and ``theta`` the pooled
    within-arm regression slope: pre-canary behaviour cannot depend on the arm (routing is a hash
    of the shopper), so the estimate stays unbiased and loses the variance ``x`` explains.
    """
    arms = []
    for s in (challenger, champion):
        if len(s) != len(USER_SUM_FIELDS) or s[0] < 1 or s[1] <= 0:
            raise ValueError("each arm needs at least one shopper with a list")
        arms.append(_arm_moments(s))
    users = [challenger[0], champion[0]]
    xbar_all = (challenger[6] + champion[6]) / (users[0] + users[1])
    sxx = sum(a[3] * u for a, u in zip(arms, users, strict=True))
    theta = sum(a[2] * u for a, u in zip(arms, users, strict=True)) / sxx if sxx > 0 else 0.0
    out = []
    for (rate, var_l, cov, var_x, xbar), s in zip(arms, (challenger, champion), strict=True):
        var = max(var_l - 2 * theta * cov + theta * theta * var_x, 0.0) / s[0]
        out.append(
            AdjustedRate(
                rate=rate,
                adjusted=rate - theta * (xbar - xbar_all),
                variance=var,
                variance_unadjusted=var_l / s[0],
                users=int(s[0]),
                lists=int(s[1]),
                clicked=round(s[2]),
            )
        )
    return out[0], out[1]


def compare_user_rates(
    challenger: list[float],
    champion: list[float],
    alpha: float,
    tau: float,
    margin: float = 0.0,
    adjust: bool = True,
) -> RatioBound:
    """:func:`compare_rates` with shoppers as the unit and (``adjust``) CUPED's variance reduction.

    The log ratio of the (adjusted) arm rates gets the same one-sided normal-mixture confidence
    sequence, with the variance estimated from the shoppers (an asymptotic confidence sequence:
    Waudby-Smith et al., time-uniform central limit theory; with regression adjustment, Lindon et
    al., anytime-valid linear models). As in :func:`compare_rates` the challenger's term is taken
    at the decision boundary ``(1 - margin)`` times the champion's rate, so a broken model's ~0
    clicks cannot hide it; it is never below the champion's own design effect times the binomial
    variance there (the arms are exchangeable under the null, and the champion's arm is the large
    one), nor below the challenger's own estimate.
    """
    if not 0 <= margin < 1:
        raise ValueError("margin must be in [0, 1)")
    c, b = adjusted_rates(challenger, champion)
    var_c = c.variance if adjust else c.variance_unadjusted
    var_b = b.variance if adjust else b.variance_unadjusted
    r_b = max(b.adjusted if adjust else b.rate, 0.5 / (b.lists + 0.5))
    r_c = max(c.adjusted if adjust else c.rate, 0.5 / (c.lists + 0.5))
    q_c = (1.0 - margin) * r_b
    deff = var_b / max(r_b * (1.0 - r_b) / b.lists, 1e-18)
    var_c = max(var_c, deff * q_c * (1.0 - q_c) / c.lists)
    variance = max(var_c / (q_c * q_c) + var_b / (r_b * r_b), 1e-12)
    log_ratio = math.log(r_c / r_b)
    w = one_sided_halfwidth(variance, alpha, tau)
    return RatioBound(
        ratio=_exp(log_ratio),
        lower=_exp(log_ratio - w),
        upper=_exp(log_ratio + w),
        x_challenger=c.clicked,
        n_challenger=c.lists,
        x_champion=b.clicked,
        n_champion=b.lists,
    )


def guarded_user_compare(
    challenger: list[float],
    champion: list[float],
    *,
    alpha: float,
    tau: float,
    min_lists: int,
    min_champion_successes: int,
    margin: float = 0.0,
    adjust: bool = True,
) -> RatioBound | None:
    """:func:`compare_user_rates` behind the same minimum-sample guard as :func:`guarded_compare`."""
    if min(challenger[1], champion[1]) < min_lists or champion[2] < min_champion_successes:
        return None
    return compare_user_rates(challenger, champion, alpha, tau, margin, adjust)
