"""Sessions: one simulated day of shoppers' visits, and the shopping missions that link them.

A day's sessions are drawn from the shop's users (``ShopModel``): when they start, which category
each one is about (a favourite, exploration, replenishment or the user's current mission), the
items viewed and the funnel from views to carts and purchases; then the day's incidents. Each day
draws from its own generator seeded by ``SeedSequence([seed, STREAM_DAY, day])``, and state that
spans days (the mission) is a hash of its keys, so days are generated independently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from shelfwise.simulator.blocks import (
    ANON_VISITOR_OFFSET,
    CART,
    DAY_MS,
    FAV,
    HOUR_MS,
    PURCHASE,
    QUERIES_PER_LEAF,
    REMOVE,
    SEARCH,
    STREAM_DAY,
    STREAM_MISSION,
    VIEW,
    DayBlock,
    sigmoid,
    take_rows,
    time_order,
)

if TYPE_CHECKING:
    from shelfwise.simulator.shop import ShopModel

# Daily cycle (UTC hour weights, evening peak, quiet night) and weekly cycle (Monday first).
HOURLY = np.array(
    [
        0.9,
        0.5,
        0.3,
        0.2,
        0.2,
        0.3,
        0.7,
        1.4,
        2.2,
        2.8,
        3.0,
        3.0,
        3.1,
        3.1,
        3.0,
        3.0,
        3.1,
        3.3,
        3.6,
        4.1,
        4.6,
        4.7,
        3.9,
        2.3,
    ]
)
HOURLY_CUM = np.cumsum(HOURLY) / HOURLY.sum()
WEEKLY = np.array([1.0, 0.97, 0.96, 0.98, 1.03, 1.12, 1.15])
MAX_VIEWS = 200
FOLLOW_UP_DEPTH = 4


def hash_uniform(*keys: np.ndarray | int) -> np.ndarray:
    """Uniform [0, 1) numbers that are a pure function of integer keys (splitmix64 of each in turn).

    State that spans days (a user's current shopping mission) comes from it, so every day is still
    generated on its own and the same keys always give the same number.
    """
    with np.errstate(over="ignore"):
        h = np.zeros(np.broadcast(*[np.asarray(k) for k in keys]).shape, dtype=np.uint64)
        for k in keys:
            h = h ^ np.asarray(k).astype(np.uint64)
            h = h + np.uint64(0x9E3779B97F4A7C15)
            h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h = h ^ (h >> np.uint64(31))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def simulate_day(model: ShopModel, day: int) -> DayBlock:
    """All events of simulated ``day`` (0-based), sorted by time. Deterministic per (seed, day)."""
    p = model.params
    rng = np.random.default_rng(np.random.SeedSequence([model.seed, STREAM_DAY, day]))
    day_ms = model.start_ms + day * DAY_MS
    users = model.users
    dow = p.day_date(day).weekday()

    active = users.join_day <= day
    rate = p.sessions_per_user_day * WEEKLY[dow] * users.activity * active
    n_sess = rng.poisson(rate)
    s_user = np.repeat(np.arange(len(users), dtype=np.int64), n_sess)
    S = len(s_user)
    session_no = (day + 1) * 10**8 + np.arange(S, dtype=np.int64)
    hour = np.searchsorted(HOURLY_CUM, rng.random(S), side="right")
    start = np.minimum(hour, 23) * HOUR_MS + rng.integers(0, HOUR_MS, S)

    replen = rng.random(S) < p.replenish_share
    search = ~replen & (rng.random(S) < p.search_share)
    anon = ~replen & (rng.random(S) < p.anonymous_share)
    logs_in = anon & (rng.random(S) < p.login_share)

    # Session category: one of the user's favourites, or exploration by category weight.
    fav, cum, uf_sess = model.user_state(s_user, day_ms + start)
    k = (rng.random(S)[:, None] > cum).sum(axis=1).clip(0, 2)
    leaf = fav[np.arange(S), k].astype(np.int64)
    explore = ~replen & (rng.random(S) < p.explore_share)
    leaf_w = model.leaf_weight * model.leaf_available(day)
    new_cat = p.incident("new_category")
    u_exp = rng.random(S)
    if new_cat is not None and day >= new_cat.day:
        boosted = leaf_w.copy()
        boosted[model.n_leaves_base :] *= float(new_cat.opt("boost"))
        after = day_ms + start >= model.incident_ms(new_cat)
        leaf_b = np.searchsorted(np.cumsum(boosted) / boosted.sum(), u_exp, side="right")
        leaf_w[model.n_leaves_base :] = 0.0
        leaf_a = np.searchsorted(np.cumsum(leaf_w) / leaf_w.sum(), u_exp, side="right")
        leaf_e = np.where(after, leaf_b, leaf_a)
    else:
        leaf_w[model.n_leaves_base :] = 0.0
        leaf_e = np.searchsorted(np.cumsum(leaf_w) / leaf_w.sum(), u_exp, side="right")
    leaf = np.where(explore, np.minimum(leaf_e, len(leaf_w) - 1), leaf)
    leaf = np.where(replen, leaf, mission_leaves(model, leaf, s_user, day_ms + start, fav, cum, leaf_w, day))
    staple = users.staple[s_user]
    leaf = np.where(replen, model.catalogue.leaf[staple], leaf)

    # Views per session (lognormal, heavy tail); replenishment sessions go straight to the staple.
    nv = 1 + np.floor(np.exp(p.views_mu + p.views_sigma * rng.standard_normal(S))).astype(np.int64)
    nv = np.where(replen, 1, np.minimum(nv, MAX_VIEWS))
    V = int(nv.sum())
    v_sess = np.repeat(np.arange(S), nv)
    first = np.cumsum(nv) - nv
    v_idx = np.arange(V) - first[v_sess]
    v_leaf = leaf[v_sess]
    c1 = model.sample_items(v_leaf, rng.random(V), day)
    c2 = model.sample_items(v_leaf, rng.random(V), day)
    vf = take_rows(uf_sess, v_sess)
    a1, a2 = model.affinity(vf, c1), model.affinity(vf, c2)
    pick2 = a2 > a1  # users look at what they like: the better of two popularity draws
    item = np.where(pick2, c2, c1).astype(np.int64)
    aff = np.where(pick2, a2, a1)
    is_replen_view = replen[v_sess]
    rv = np.flatnonzero(is_replen_view)
    item[rv] = staple[v_sess[rv]]
    aff[rv] = model.affinity(vf[rv], item[rv])

    # Times: a search first, then views 4 s to a few minutes apart; checkout after the last view.
    gap = 4000 + rng.exponential(38_000, V).astype(np.int64)
    gap[first] += np.where(search, 6000, 0)
    off = np.cumsum(gap)
    off -= np.repeat(off[first] - gap[first], nv)
    last_off = off[first + nv - 1]
    checkout = last_off + 20_000 + rng.exponential(50_000, S).astype(np.int64)
    dur = checkout + 60_000
    start = np.clip(np.minimum(start, DAY_MS - dur - 1), 0, None)
    base = day_ms + start
    v_ts = base[v_sess] + off

    # Funnel: probabilities from the true affinity, the price (shock) and stock.
    mult = model.price_multiplier(item, v_ts)
    price = model.catalogue.price[item] * mult
    logit = p.funnel_slope * aff
    cart_logit = model.cart_base + logit
    cart_logit[rv] += 5.0
    cart = (rng.random(V, dtype=np.float32) < sigmoid(cart_logit)) & model.catalogue.in_stock[item]
    fav_ev = rng.random(V, dtype=np.float32) < sigmoid(model.fav_base + logit)
    ci = np.flatnonzero(cart)
    nc = len(ci)
    rep_c = is_replen_view[ci]
    buy_logit = model.buy_base + logit[ci] + 3.0 * rep_c - p.price_elasticity * np.log(mult[ci])
    can_pay = ~(anon & ~logs_in)[v_sess[ci]]  # guests cannot check out
    b_c = (rng.random(nc) < sigmoid(buy_logit)) & can_pay
    r_c = ~b_c & (rng.random(nc) < p.remove_share)
    q_c = np.where(rep_c, 1 + rng.poisson(1.2, nc), 1 + (rng.random(nc) < 0.12) * rng.geometric(0.5, nc))
    buy = np.zeros(V, dtype=bool)
    buy[ci[b_c]] = True
    remove = np.zeros(V, dtype=bool)
    remove[ci[r_c]] = True
    qty = np.zeros(V, dtype=np.int16)
    qty[ci] = q_c

    # Identity: anonymous until login (at a random view); purchases happen after login.
    login_at = np.where(logs_in, rng.integers(0, np.maximum(nv, 1)), np.where(anon, MAX_VIEWS + 1, 0))
    v_anon = v_idx < login_at[v_sess]

    def rank_in_session(mask: np.ndarray) -> np.ndarray:
        sel = np.flatnonzero(mask)
        s = v_sess[sel]
        c = np.arange(len(sel)) - np.searchsorted(s, s)
        return c

    parts: list[tuple[np.ndarray, ...]] = []  # (ts, code, session index, item, anon, price, qty)
    zeros16 = np.zeros(V, dtype=np.int16)
    parts.append((v_ts, np.full(V, VIEW), v_sess, item, v_anon, price, zeros16))
    sel = np.flatnonzero(cart)
    parts.append(
        (
            v_ts[sel] + 1000 + rng.integers(0, 1000, len(sel)),
            np.full(len(sel), CART),
            v_sess[sel],
            item[sel],
            v_anon[sel],
            price[sel],
            qty[sel],
        )
    )
    sel = np.flatnonzero(fav_ev)
    parts.append(
        (
            v_ts[sel] + 2000 + rng.integers(0, 1000, len(sel)),
            np.full(len(sel), FAV),
            v_sess[sel],
            item[sel],
            v_anon[sel],
            price[sel],
            zeros16[sel],
        )
    )
    sel = np.flatnonzero(remove)
    r = rank_in_session(remove)
    parts.append(
        (
            base[v_sess[sel]] + last_off[v_sess[sel]] + 5000 + 1000 * r,
            np.full(len(sel), REMOVE),
            v_sess[sel],
            item[sel],
            v_anon[sel],
            price[sel],
            qty[sel],
        )
    )
    sel = np.flatnonzero(buy)
    r = rank_in_session(buy)
    parts.append(
        (
            base[v_sess[sel]] + checkout[v_sess[sel]] + 1000 * r,
            np.full(len(sel), PURCHASE),
            v_sess[sel],
            item[sel],
            np.zeros(len(sel), bool),
            price[sel],
            qty[sel],
        )
    )
    s_sel = np.flatnonzero(search)
    q = leaf[s_sel] * QUERIES_PER_LEAF + rng.integers(0, QUERIES_PER_LEAF, len(s_sel))
    parts.append(
        (
            base[s_sel],
            np.full(len(s_sel), SEARCH),
            s_sel,
            np.full(len(s_sel), -1),
            anon[s_sel] & (login_at[s_sel] > 0),
            np.full(len(s_sel), np.nan),
            np.zeros(len(s_sel), np.int16),
        )
    )

    ts = np.concatenate([x[0] for x in parts])
    code = np.concatenate([x[1] for x in parts]).astype(np.int8)
    sess_i = np.concatenate([x[2] for x in parts])
    items = np.concatenate([x[3] for x in parts]).astype(np.int32)
    is_anon = np.concatenate([x[4] for x in parts])
    prices = np.concatenate([x[5] for x in parts])
    qtys = np.concatenate([x[6] for x in parts]).astype(np.int16)
    query = np.full(len(ts), -1, dtype=np.int32)
    query[len(ts) - len(s_sel) :] = q
    uidx = s_user[sess_i]
    user = np.where(is_anon, -1, uidx)
    visitor = np.where(is_anon, ANON_VISITOR_OFFSET + session_no[sess_i], uidx)
    block = DayBlock(day, ts, code, user, visitor, session_no[sess_i], items, prices, qtys, query, uidx)
    block = day_incidents(model, block, day, rng)
    return block.select(time_order(block.ts))


def mission_leaves(
    model: ShopModel,
    leaf: np.ndarray,
    s_user: np.ndarray,
    t_ms: np.ndarray,
    fav: np.ndarray,
    cum: np.ndarray,
    leaf_w: np.ndarray,
    day: int,
) -> np.ndarray:
    """Session leaves with a share of them moved to the user's current mission.

    A mission is a leaf held for ``mission_days`` from a per-user phase: a need outside the
    favourites (a leaf by category weight, ``mission_explore`` of the time) or one of the
    user's favourites (by their weights). ``mission_complement`` of the missions follow up on
    the one before: its category's complement (``ShopModel.complement_leaf``: after a phone, its
    accessories). Which mission a time falls in, and its leaf, are hashes of (seed, user,
    mission number), so days stay independent. Consecutive sessions then share a category, as a
    real shopper's do while a purchase is being decided, and the next mission follows from the
    last, so recent behaviour predicts the next days better than the whole history does.
    """
    p = model.params
    if p.mission_share <= 0.0 or len(leaf) == 0:
        return leaf
    mission_ms = p.mission_days * DAY_MS
    phase = hash_uniform(model.seed, STREAM_MISSION, s_user) * mission_ms
    number = np.floor((t_ms - model.start_ms + phase) / mission_ms).astype(np.int64)
    cdf = np.cumsum(leaf_w) / leaf_w.sum()
    rng = np.random.default_rng(np.random.SeedSequence([model.seed, STREAM_MISSION, day]))
    follows = np.flatnonzero(rng.random(len(leaf)) < p.mission_share)
    users = s_user[follows]

    def own_leaf(sel: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Mission ``n``'s leaf before any follow-up: a favourite, or a need by category weight."""
        u = hash_uniform(model.seed, STREAM_MISSION, users[sel], n)
        k = (u[:, None] > cum[follows[sel]]).sum(axis=1).clip(0, 2)
        mission = fav[follows[sel], k].astype(np.int64)
        need = hash_uniform(model.seed, STREAM_MISSION, users[sel], n, 1) < p.mission_explore
        by_weight = np.searchsorted(cdf, hash_uniform(model.seed, STREAM_MISSION, users[sel], n, 2))
        return np.where(need, np.minimum(by_weight, len(leaf_w) - 1), mission)

    def mission_of(sel: np.ndarray, n: np.ndarray, depth: int) -> np.ndarray:
        """Mission ``n``'s leaf: a follow-up's is the complement of the mission before (itself
        perhaps a follow-up), traced back ``depth`` missions (a longer chain has probability
        ``mission_complement ** depth``)."""
        mission = own_leaf(sel, n)
        if depth == 0 or p.mission_complement <= 0.0:
            return mission
        up = np.flatnonzero(hash_uniform(model.seed, STREAM_MISSION, users[sel], n, 3) < p.mission_complement)
        if len(up):
            after = model.complement_leaf[mission_of(sel[up], n[up] - 1, depth - 1)]
            mission[up] = np.where(leaf_w[after] > 0, after, mission[up])
        return mission

    out = leaf.copy()
    out[follows] = mission_of(np.arange(len(follows)), number[follows], FOLLOW_UP_DEPTH)
    return out


def day_incidents(model: ShopModel, block: DayBlock, day: int, rng: np.random.Generator) -> DayBlock:
    """Bot traffic added, data outage removed."""
    p = model.params
    bot = p.incident("bot_traffic")
    if bot is not None and bot.day == day:
        t0 = model.incident_ms(bot)
        n = int(bot.opt("views"))
        ts = t0 + (np.arange(n) * float(bot.opt("interval_s")) * 1000).astype(np.int64)
        ts = ts[ts < model.start_ms + (day + 1) * DAY_MS]
        n = len(ts)
        avail = np.flatnonzero(model.catalogue.launch_day <= day)
        items = avail[(int(rng.integers(0, len(avail))) + np.arange(n)) % len(avail)].astype(np.int32)
        bot_user = model.bot_user_index
        block = DayBlock(
            day,
            np.concatenate([block.ts, ts]),
            np.concatenate([block.code, np.full(n, VIEW, np.int8)]),
            np.concatenate([block.user, np.full(n, bot_user)]),
            np.concatenate([block.visitor, np.full(n, bot_user)]),
            np.concatenate([block.session, np.full(n, (day + 1) * 10**8 + 99_999_999)]),
            np.concatenate([block.item, items]),
            np.concatenate([block.price, model.catalogue.price[items] * model.price_multiplier(items, ts)]),
            np.concatenate([block.quantity, np.zeros(n, np.int16)]),
            np.concatenate([block.query, np.full(n, -1, np.int32)]),
            np.concatenate([block.owner, np.full(n, bot_user)]),
        )
    outage = p.incident("data_outage")
    if outage is not None:
        t0 = model.incident_ms(outage)
        t1 = t0 + int(float(outage.opt("hours")) * HOUR_MS)
        keep = (block.ts < t0) | (block.ts >= t1)
        if not keep.all():
            block = block.select(keep)
    return block
