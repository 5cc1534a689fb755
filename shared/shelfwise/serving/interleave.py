"""Team-draft interleaving: one list made of two rankings, each item credited to the model that picked it.

Team draft (Radlinski, Kurup and Joachims 2008): in each round the two teams pick in a random
order; each picks its highest-ranked item not yet in the list. The team with fewer picks goes
first, a coin decides ties, so at any depth the two teams have contributed the same number of
items (one more for one of them at odd depths). Under the null that the shopper's clicks do not
depend on which team placed an item, a click is equally likely to be credited to either team:
that randomisation is what makes the per-list win/loss comparison fair, whatever the shopper's
own propensity to click (the between-shopper variance an A/B split pays for cancels).

The coin is a hash of the recommendation id, so a served list can be replayed exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

CHAMPION, CHALLENGER = 0, 1


@dataclass(frozen=True)
class Interleaved:
    """The merged list: for each position, which team (0 champion, 1 challenger) and that team's rank."""

    teams: list[int]
    ranks: list[int]


def _coins(seed: str, n: int) -> list[int]:
    digest = hashlib.blake2b(seed.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    bits = int.from_bytes(digest, "big")
    return [(bits >> (i % 128)) & 1 for i in range(n)]


def team_draft(a: Sequence[str], b: Sequence[str], k: int, seed: str) -> Interleaved:
    """Interleave rankings ``a`` (champion) and ``b`` (challenger) into at most ``k`` distinct items.

    Returns each position's team and the index of the item in that team's ranking. When one
    ranking runs out, the other fills the remaining positions (still credited to itself).
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    rankings = (a, b)
    taken: set[str] = set()
    nxt = [0, 0]
    picks = [0, 0]
    teams: list[int] = []
    ranks: list[int] = []
    coins = _coins(seed, 2 * k + 2)
    c = 0

    def pick(team: int) -> bool:
        r = rankings[team]
        while nxt[team] < len(r) and r[nxt[team]] in taken:
            nxt[team] += 1
        if nxt[team] >= len(r):
            return False
        taken.add(r[nxt[team]])
        teams.append(team)
        ranks.append(nxt[team])
        picks[team] += 1
        nxt[team] += 1
        return True

    while len(teams) < k:
        if picks[0] != picks[1]:
            team = 0 if picks[0] < picks[1] else 1
        else:
            team = coins[c % len(coins)]
            c += 1
        if not pick(team) and not pick(1 - team):
            break
    return Interleaved(teams, ranks)
