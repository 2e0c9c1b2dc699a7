"""Anchor archs: a fixed, diverse set of subnets scored on every task of a space (the task fingerprint).

Their normalized scores form the task embedding (HELP-style) and are the first
target data of a new search, so they must be identical for every task in a space
and spread over it: the smallest and largest arch, then greedy farthest-point picks
(maximin distance in `arch_features` space) from a seeded random pool. The greedy
order makes the lists nested: the first k anchors of `anchor_archs(space, K)` are
`anchor_archs(space, k)` for any k <= K with the same seed and pool.
"""

from __future__ import annotations

import random

import numpy as np

from metanas.meta.encoding import DEFAULT_MAX_LAYERS, DEFAULT_SEQ_LEN, arch_feature_matrix
from metanas.space import ArchConfig, SearchSpace

DEFAULT_K = 16
DEFAULT_POOL = 2000


def anchor_archs(
    space: SearchSpace,
    k: int = DEFAULT_K,
    seed: int = 0,
    pool_size: int = DEFAULT_POOL,
    seq_len: int = DEFAULT_SEQ_LEN,
    max_layers: int = DEFAULT_MAX_LAYERS,
) -> list[ArchConfig]:
    """`k` distinct anchors: smallest, largest, then maximin-diverse picks; same inputs give the same list.

    A space whose pool holds fewer than `k` archs with distinct features yields only those.
    """
    if k < 2:
        raise ValueError(f"anchor_archs: k must be >= 2 (smallest and largest), got {k}")
    rng = random.Random(seed)
    fixed = [space.smallest(), space.largest()]
    pool = list(dict.fromkeys(fixed + [space.sample(rng) for _ in range(pool_size)]))
    feats = arch_feature_matrix(space, pool, seq_len, max_layers)
    chosen = [0, 1] if pool[0] != pool[1] else [0]
    # Distance of every pool member to its nearest chosen anchor.
    nearest = np.min(np.linalg.norm(feats[:, None, :] - feats[None, chosen, :], axis=2), axis=1)
    while len(chosen) < min(k, len(pool)):
        best = int(np.argmax(nearest))  # first index wins ties, so the choice is deterministic
        if nearest[best] == 0.0:
            break
        chosen.append(best)
        nearest = np.minimum(nearest, np.linalg.norm(feats - feats[best], axis=1))
    return [pool[i] for i in chosen]
