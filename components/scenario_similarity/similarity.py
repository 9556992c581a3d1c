"""SAMD's implicit scenario similarity (Section 4.2.2, Equation 3), computed exactly from user-set counts.

    Sim(i, j) = sum_{u in U_i ∩ U_j} sum_{v in U_i ∩ U_j} w_u w_v / (alpha + |S_u ∩ S_v|),
    w_u = 1 / sqrt(|S_u|)

U_i is the set of users who visited scenario i, S_u the set of scenarios user u
visited, alpha a smoothing coefficient (the paper does not give its value).

u = v pairs: u and v range over the same set U_i ∩ U_j and the formula as printed does
not exclude u = v, so they are INCLUDED here: each user adds 1 / (|S_u| (alpha + |S_u|))
to Sim(i, j) for every pair i, j in S_u. (Swing, which the paper cites, sums over
distinct pairs; following the formula as printed keeps Sim well defined when a
scenario pair shares a single user.)

Why grouping: a user enters Equation 3 only through S_u, so users with the same
visited set contribute identically. With n_A users of set A,

    Sim(i, j) = sum over sets A, B that both contain i and j of
                n_A n_B / sqrt(|A| |B|) / (alpha + |A ∩ B|),

which is exact and costs O(K^2 N^2) for K distinct sets and N scenarios (K <= 2^N - 1,
hundreds in practice) instead of O(|U|^2) user pairs. The diagonal Sim(i, i) is the same
sum over sets containing i; `top_g` ignores it.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, Hashable, Iterable, List, Mapping, Sequence, Tuple

import numpy as np


def user_scenario_sets(pairs: Iterable[Tuple[Hashable, Hashable]]) -> Dict[Hashable, FrozenSet]:
    """{user: frozenset of scenarios the user visited} from (user, scenario) rows (duplicates allowed)."""
    sets: Dict[Hashable, set] = {}
    for user, scenario in pairs:
        sets.setdefault(user, set()).add(scenario)
    return {u: frozenset(s) for u, s in sets.items()}


def scenario_sets_from_pairs(pairs: Iterable[Tuple[Hashable, Hashable]]) -> Dict[FrozenSet, int]:
    """{visited-scenario set S: number of users whose visited set is exactly S} from (user, scenario) rows."""
    counts: Dict[FrozenSet, int] = {}
    for s in user_scenario_sets(pairs).values():
        counts[s] = counts.get(s, 0) + 1
    return counts


def membership_matrix(set_counts: Mapping[Iterable, int], scenarios: Sequence) -> Tuple[np.ndarray, np.ndarray]:
    """(M [K, N] 0/1 float64, n [K] float64): row a of M is set a over `scenarios`, n[a] its user count.

    Raises ValueError for a set that names a scenario not in `scenarios`, or is empty.
    """
    index = {s: k for k, s in enumerate(scenarios)}
    if len(index) != len(scenarios):
        raise ValueError(f"scenarios listed twice in {list(scenarios)}")
    M = np.zeros((len(set_counts), len(scenarios)), np.float64)
    n = np.zeros(len(set_counts), np.float64)
    for a, (members, count) in enumerate(set_counts.items()):
        members = list(members)
        if not members:
            raise ValueError("a user with an empty scenario set has no weight w_u = 1/sqrt(|S_u|)")
        unknown = [m for m in members if m not in index]
        if unknown:
            raise ValueError(f"scenario(s) {unknown} are not in the scenario list {list(scenarios)}")
        M[a, [index[m] for m in members]] = 1.0
        n[a] = count
    return M, n


def grouped_similarity(set_counts: Mapping[Iterable, int], scenarios: Sequence, alpha: float = 1.0) -> np.ndarray:
    """Equation 3 for every scenario pair, [N, N] in the order of `scenarios`, from user counts per set.

    `set_counts` maps a visited-scenario set (any iterable of scenario ids; frozenset,
    sorted tuple) to its number of users.
    """
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0 (a smoothing coefficient), got {alpha}")
    N = len(scenarios)
    if not set_counts:
        return np.zeros((N, N))
    M, n = membership_matrix(set_counts, scenarios)
    size = M.sum(axis=1)
    c = n / np.sqrt(size)  # n_A * w for every user of set A
    # Equation 3, grouped: kernel[A, B] = n_A n_B / sqrt(|A||B|) / (alpha + |A ∩ B|).
    # Sets that share no scenario never meet in a sum (both need i and j); zero them so
    # that alpha = 0 does not divide by zero.
    inter = M @ M.T
    kernel = np.divide(np.outer(c, c), alpha + inter, out=np.zeros_like(inter), where=inter > 0)
    # both[A, i, j] = 1 when set A holds i and j; Sim(i,j) = both[:, i, j]^T kernel both[:, i, j].
    both = (M[:, :, None] * M[:, None, :]).reshape(len(n), N * N)
    sim = np.einsum("ap,ap->p", both, kernel @ both)
    return sim.reshape(N, N)


def brute_force_similarity(user_scenarios: Mapping[Hashable, Iterable], scenarios: Sequence,
                           alpha: float = 1.0) -> np.ndarray:
    """Equation 3 literally, a double loop over users (u = v included); for tests only, O(|U|^2 N^2)."""
    index = {s: k for k, s in enumerate(scenarios)}
    N = len(scenarios)
    sets = [frozenset(index[s] for s in ss) for ss in user_scenarios.values()]
    sim = np.zeros((N, N))
    for i in range(N):
        for j in range(N):
            common = [s for s in sets if i in s and j in s]  # U_i ∩ U_j
            total = 0.0
            for su in common:
                for sv in common:
                    total += 1.0 / np.sqrt(len(su)) / np.sqrt(len(sv)) / (alpha + len(su & sv))
            sim[i, j] = total
    return sim


def top_g(sim: np.ndarray, g: int) -> List[List[int]]:
    """Each scenario's G most similar OTHER scenarios (indices), most similar first.

    A scenario is never its own neighbour. Ties (equal Sim, e.g. 0 for scenarios that
    share no user) go to the scenario listed first, so the result is deterministic and
    always holds min(G, N-1) neighbours, as Equation 4's mean pooling expects G of them.
    """
    sim = np.asarray(sim, dtype=np.float64)
    N = sim.shape[0]
    if sim.shape != (N, N):
        raise ValueError(f"similarity matrix must be square, got shape {sim.shape}")
    if g < 0:
        raise ValueError(f"G must be >= 0, got {g}")
    g = min(g, N - 1)
    out = []
    for i in range(N):
        others = np.array([j for j in range(N) if j != i], dtype=np.int64)
        # lexsort: last key is primary (-Sim), then the scenario's position breaks ties.
        order = np.lexsort((others, -sim[i, others]))
        out.append(others[order[:g]].tolist())
    return out
