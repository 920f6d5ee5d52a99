"""Combines several backends' counts into one distribution, with a confidence, per-backend weights and distances.

Notation used in the method descriptions: result i has counts c_i(x), n_i = sum_x c_i(x) shots and normalised
distribution p_i(x) = c_i(x) / n_i (after readout mitigation, when asked); N results; the aggregate is p(x).
Results are processed in the order of their backend names, so the order they arrive in never changes the answer.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress

import numpy as np

from qnet_common import errors
from services.aggregator.domain.distributions import (
    MAX_INT_BITS,
    bitstrings,
    hellinger_distance,
    hellinger_fidelity,
    largest_remainder,
    outcome_ids,
    parse_counts,
)
from services.aggregator.domain.mitigation import DENSE_MAX_BITS, assignment_matrices
from services.aggregator.domain.mitigation import mitigate as mitigate_readout

__all__ = [
    "DEFAULT_MAX_DIVERGENCE",
    "METHODS",
    "Aggregation",
    "BackendCounts",
    "BackendWeight",
    "MethodInfo",
    "aggregate",
    "hellinger_distance",
    "hellinger_fidelity",
]

log = logging.getLogger(__name__)

#: Largest Hellinger distance of a result from the aggregate. Below sqrt(1 - sqrt(1/2)) = 0.541, the smallest
#: possible larger distance of two results with no common outcome from any mixture of them, so such a pair
#: fails under every method and every weighting.
DEFAULT_MAX_DIVERGENCE = 0.5
#: The most results one aggregation takes (more than a 1 MiB request body can carry with their counts).
MAX_RESULTS = 10_000
#: The most distinct outcomes one result may have (ten times the most shots a job runs).
MAX_OUTCOMES = 1 << 20
#: The most cells (results x distinct outcomes over all of them) of the table an aggregation computes on, checked
#: before the table is built: 32 MiB of floats a copy. It holds 10 backends over 2^16 outcomes, or a job's 32
#: backends of 100,000 distinct outcomes each.
MAX_CELLS = 1 << 22
#: Agreement compares pairs of results. Up to EXACT_PAIRS results it takes every pair; beyond, each result is
#: compared with the PARTNERS weightiest ones (the pairs that dominate the weighted mean), so the work grows
#: linearly: 8,000 results aggregate well under a second (bench/results/aggregation.md). The check for results
#: with no outcome in common stays exact (_disjoint_pairs: each outcome's results as a bitset).
EXACT_PAIRS = 256
PARTNERS = 64
#: Pair-outcome cells computed per vectorised block (bounds the memory of the pairwise work).
_PAIR_BLOCK = 1 << 20
#: Bytes of bitsets the disjointness check holds per block of results.
_BITSET_BLOCK = 1 << 24
#: An outcome of at most this probability in a result (a mitigation's rounding residue) is not one it saw.
_NEGLIGIBLE = 1e-12


@dataclass(frozen=True)
class BackendCounts:
    """One backend's result as the aggregator receives it."""

    backend: str
    #: Bitstring (classical bit 0 is the rightmost character) -> number of shots.
    counts: Mapping[str, int]
    #: Shots behind the counts; None means their sum. Must not be below their sum.
    shots: int | None = None
    #: Estimated success probability in [0, 1], the weight of weighted_average; None means 1.
    fidelity: float | None = None
    #: Per classical bit, bit 0 first: (p(1|0), p(0|1)). Needed by mitigate=True.
    readout_errors: Sequence[tuple[float, float]] | None = None


@dataclass(frozen=True)
class BackendWeight:
    """A backend's part in an aggregation: its normalised weight and its Hellinger distance from the aggregate."""

    backend: str
    weight: float
    distance: float


@dataclass(frozen=True)
class Aggregation:
    """The combined answer. `weights` follows the order of the results given; dicts hold non-zero entries only."""

    method: str
    #: Integers summing exactly to `shots` (largest-remainder rounding of probabilities * shots).
    counts: dict[str, int]
    #: In [0, 1]: agreement between the backends times the precision their shots allow (see CONFIDENCE).
    confidence: float
    shots: int
    weights: tuple[BackendWeight, ...]
    probabilities: dict[str, float]
    mitigated: bool
    #: Backend -> its readout-mitigated counts (summing to its shots), when mitigated.
    mitigated_counts: dict[str, dict[str, int]]


@dataclass(frozen=True)
class MethodInfo:
    name: str
    #: The maths, in plain text.
    description: str
    #: (name, type, description) of every parameter the method reads.
    parameters: tuple[tuple[str, str, str], ...]


CONFIDENCE = (
    "confidence = A * (1 - eps). Agreement A = sum_{i<j} w_i w_j (1 - D_ij) / sum_{i<j} w_i w_j (A = 1 for a "
    "single result), with w_i the method's normalised weights and D_ij = sqrt(max(0, H_ij^2 - E_ij)) the "
    "Hellinger distance between results i and j beyond what shot noise explains: E_ij = 1/2 sum_x "
    "min((1 - m(x)) (1/n_i + 1/n_j) / 4, 2 m(x)), m = (p_i + p_j) / 2, is the expected squared distance between "
    "two samples of one distribution (delta method, each term capped for outcomes too rare for it). "
    "Sampling error eps = min(1, sum_x sqrt(p(x) (1 - p(x)) / (2 pi n_eff)) + G), with "
    "n_eff = 1 / sum_i (w_i^2 / n_i): the expected total-variation distance between the aggregate and the true "
    "distribution due to finite shots alone (normal approximation), plus G = f_1 / sum_i n_i, the Good-Turing "
    "estimate of the probability of outcomes no backend observed (f_1: outcomes counted exactly once over all "
    "results' raw counts)."
)
DIVERGENCE = (
    "AGGREGATION_FAILED when some result's Hellinger distance from the aggregate, "
    "H(p_i, p) = sqrt(1 - sum_x sqrt(p_i(x) p(x))), exceeds max_divergence (default 0.5), or when two results "
    "have no outcome in common."
)
_COMMON = (
    " Then for every method: aggregated counts = p(x) * shots rounded by largest remainder; "
    + CONFIDENCE
    + " "
    + DIVERGENCE
)
_PARAMETERS = (
    ("counts", "map<string, int>", "per result: bitstring (classical bit 0 rightmost) -> count; one width for all"),
    (
        "shots",
        "int",
        "per result: shots behind the counts (default their sum); per request: shots of the "
        "aggregated counts (default the largest of the results' shots)",
    ),
    ("max_divergence", "double", "largest Hellinger distance of a result from the aggregate, in (0, 1]; default 0.5"),
    ("mitigate", "bool", "correct every result's readout errors (tensored inverse) before combining"),
    (
        "readout_errors",
        "list<(double, double)>",
        "per result, per classical bit (bit 0 first): (p(1|0), p(0|1)); needed by mitigate",
    ),
)
_FIDELITY = ("fidelity", "double", "per result: estimated success probability in [0, 1], its weight; default 1")

METHODS: dict[str, MethodInfo] = {
    info.name: info
    for info in (
        MethodInfo(
            "weighted_average",
            "Linear pool weighted by fidelity: p(x) = sum_i w_i p_i(x), w_i = f_i / sum_j f_j, where f_i is the "
            "result's fidelity (the circuit's estimated success probability on that backend), 1 when not given. "
            "Shots do not change the weights." + _COMMON,
            (*_PARAMETERS, _FIDELITY),
        ),
        MethodInfo(
            "majority_vote",
            "Per-outcome majority of backends: backend i votes for outcome x when it observed it (c_i(x) > 0). "
            "The outcomes voted for by a strict majority (more than N/2 backends) win; if none does, those with "
            "the most votes win. p(x) = mean_i p_i(x) for winning x and 0 otherwise, renormalised. Outcomes that "
            "only a minority of backends saw (device-specific errors) are dropped; every backend weighs 1/N and "
            "fidelity is not read." + _COMMON,
            _PARAMETERS,
        ),
        MethodInfo(
            "confidence_weighted",
            "Inverse mean squared error around a robust consensus. m = per-outcome median of the p_i, "
            "renormalised (their mean if that median is 0 everywhere). V_i = max(s^2 / n_i, ||p_i - m||^2), "
            "s^2 = max(1 - sum_x m(x)^2, 1 / sum_j n_j): the sampling variance of result i (multinomial, summed "
            "over outcomes), replaced by its squared L2 distance from m when it disagrees more than its shots "
            "explain. w_i = (1 / V_i) / sum_j (1 / V_j), p(x) = sum_i w_i p_i(x). More shots weigh more, outliers "
            "weigh less; fidelity is not read." + _COMMON,
            _PARAMETERS,
        ),
        MethodInfo(
            "median",
            "p(x) = median_i p_i(x) / sum_y median_i p_i(y): the per-outcome median of the normalised "
            "distributions (mean of the two middle values for even N), renormalised. Robust to fewer than half "
            "the backends being wrong; every backend is reported with weight 1/N; fails when the median is 0 for "
            "every outcome (no outcome seen by half the backends)." + _COMMON,
            _PARAMETERS,
        ),
    )
}


@dataclass
class _Table:
    """The results in canonical (backend name) order over the union of their outcomes."""

    names: list[str]
    width: int
    ids: np.ndarray  # (K,) sorted outcome ids
    probabilities: np.ndarray  # (N, K), rows sum to 1
    shots: np.ndarray  # (N,) counts behind each row
    fidelities: np.ndarray  # (N,)
    singletons: int  # outcomes counted exactly once over all results' raw counts


def aggregate(
    results: Sequence[BackendCounts],
    method: str = "weighted_average",
    shots: int | None = None,
    max_divergence: float = DEFAULT_MAX_DIVERGENCE,
    mitigate: bool = False,
) -> Aggregation:
    """Combines the results by `method`. Raises InvalidAggregationMethod, InvalidCounts, InvalidArgument,
    InvalidShots (bad input, the message says what to change) or AggregationFailed (too divergent)."""
    combine = _COMBINERS.get(method)
    if combine is None:
        raise errors.InvalidAggregationMethod(
            f"unknown aggregation method {method!r}; use one of: {', '.join(METHODS)}", method=str(method)
        )
    results = list(results)
    if not results:
        raise errors.InvalidCounts("no results to aggregate: send at least one result with its backend and counts")
    if len(results) > MAX_RESULTS:
        raise errors.InvalidArgument(
            f"field 'results' has {len(results)} results: at most {MAX_RESULTS} per aggregation; combine them in"
            f" groups and aggregate the groups")
    _check_request(shots, max_divergence)
    table, mitigated_counts = _table(results, mitigate)
    consensus, weights = combine(table)

    roots = np.sqrt(table.probabilities)
    # H^2 = 1/2 sum_x (sqrt p_i - sqrt p)^2 equals 1 - sum_x sqrt(p_i p) without its cancellation near 0.
    distances = np.sqrt(np.clip(0.5 * ((roots - np.sqrt(consensus)) ** 2).sum(axis=1), 0.0, 1.0))
    _check_divergence(method, table, distances, _disjoint_pairs(table.probabilities > _NEGLIGIBLE), max_divergence)

    out_shots = shots if shots is not None else max(_declared_shots(r) for r in results)
    support = np.flatnonzero(consensus > 0)
    keys = bitstrings(table.ids[support], table.width)
    # Outcomes of probability 0 have remainder 0 and never receive a unit, so rounding the support suffices.
    counts = largest_remainder(consensus[support], out_shots)
    positive = counts > 0
    confidence = _confidence(consensus, weights, table, roots)
    position = {name: i for i, name in enumerate(table.names)}
    found = Aggregation(
        method=method,
        counts=dict(zip(compress(keys, positive.tolist()), counts[positive].tolist(), strict=True)),
        confidence=confidence,
        shots=out_shots,
        weights=tuple(
            BackendWeight(r.backend, float(weights[position[r.backend]]), float(distances[position[r.backend]]))
            for r in results
        ),
        probabilities=dict(zip(keys, consensus[support].tolist(), strict=True)),
        mitigated=mitigate,
        mitigated_counts={r.backend: mitigated_counts[r.backend] for r in results} if mitigate else {},
    )
    log.debug(
        "aggregated method=%s results=%d outcomes=%d shots=%d confidence=%.4f",
        method,
        len(results),
        table.ids.size,
        out_shots,
        confidence,
    )
    return found


# --- validation and the table ----------------------------------------------------------------------------


def _check_request(shots: object, max_divergence: object) -> None:
    if shots is not None and (not isinstance(shots, int) or isinstance(shots, bool) or shots < 1):
        raise errors.InvalidShots(f"shots of the aggregate must be a positive integer, got {shots!r}")
    if (
        not isinstance(max_divergence, int | float)
        or isinstance(max_divergence, bool)
        or not 0.0 < float(max_divergence) <= 1.0
    ):
        raise errors.InvalidArgument(
            f"max_divergence must be a Hellinger distance in (0, 1], got {max_divergence!r}; default "
            f"{DEFAULT_MAX_DIVERGENCE}"
        )


def _declared_shots(result: BackendCounts) -> int:
    return result.shots if result.shots is not None else int(sum(result.counts.values()))


def _table(results: list[BackendCounts], mitigate: bool) -> tuple[_Table, dict[str, dict[str, int]]]:
    names = [r.backend for r in results]
    for name in names:
        if not isinstance(name, str) or not name:
            raise errors.InvalidArgument(f"every result needs a backend name (a non-empty string), got {name!r}")
    duplicates = sorted(name for name, seen in Counter(names).items() if seen > 1)
    if duplicates:
        raise errors.InvalidArgument(
            f"backend names must be unique, repeated: {', '.join(duplicates)}; merge their counts or rename them"
        )
    if mitigate:
        missing = [r.backend for r in results if not r.readout_errors]
        if missing:
            raise errors.InvalidArgument(
                f"mitigate=true needs readout_errors on every result, missing for: {', '.join(missing)}"
            )

    ordered = sorted(results, key=lambda r: r.backend)
    width: int | None = None
    first = ""
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    raw_rows: list[tuple[np.ndarray, np.ndarray]] = []
    totals, fidelities = [], []
    mitigated_counts: dict[str, dict[str, int]] = {}
    for result in ordered:
        name = result.backend
        if isinstance(result.counts, Mapping) and len(result.counts) > MAX_OUTCOMES:
            raise errors.InvalidCounts(
                f"result {name!r} has {len(result.counts)} outcomes: at most {MAX_OUTCOMES} per result",
                backend=name)
        bits, values = parse_counts(name, result.counts)
        total = int(values.sum())
        if total == 0:
            raise errors.InvalidCounts(f"counts of result {name!r} sum to 0; a result needs at least one shot")
        if width is None:
            width, first = bits.shape[1], name
            if mitigate and width <= DENSE_MAX_BITS and len(results) << width > MAX_CELLS:
                raise errors.InvalidArgument(
                    f"mitigating {len(results)} results of {width} bits spreads each over all 2^{width} outcomes: "
                    f"{len(results) << width} cells, at most {MAX_CELLS} per aggregation; mitigate fewer results "
                    "at a time")
        elif bits.shape[1] != width:
            raise errors.InvalidCounts(
                f"result {name!r} has {bits.shape[1]}-bit bitstrings but {first!r} has {width}-bit ones; every "
                "result must measure the same classical bits"
            )
        _check_result_shots(name, result.shots, total)
        fidelities.append(_fidelity(name, result.fidelity))
        probabilities = values / total
        if result.readout_errors:
            matrices = assignment_matrices(name, result.readout_errors, width)
            if mitigate:
                raw_rows.append((outcome_ids(bits), values.astype(float)))
                bits, probabilities = mitigate_readout(name, bits, probabilities, matrices)
                rounded = largest_remainder(probabilities, total)
                nonzero = np.flatnonzero(rounded)
                ids = outcome_ids(bits[nonzero])
                mitigated_counts[name] = dict(zip(bitstrings(ids, width), rounded[nonzero].tolist(), strict=True))
        rows.append((outcome_ids(bits), probabilities))
        totals.append(total)
    assert width is not None
    ids, matrix = _union(rows, width)
    shots = np.array(totals, dtype=float)
    pooled = _union(raw_rows, width)[1].sum(axis=0) if mitigate else np.rint(shots @ matrix)
    return (
        _Table(
            [r.backend for r in ordered],
            width,
            ids,
            matrix,
            shots,
            np.array(fidelities),
            int(np.count_nonzero(pooled == 1)),
        ),
        mitigated_counts,
    )


def _check_result_shots(name: str, shots: object, total: int) -> None:
    if shots is None:
        return
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 1:
        raise errors.InvalidShots(f"shots of result {name!r} must be a positive integer, got {shots!r}")
    if shots < total:
        raise errors.InvalidCounts(
            f"counts of result {name!r} sum to {total}, more than its shots={shots}; send the shots that were run "
            "or leave shots out"
        )


def _fidelity(name: str, fidelity: object) -> float:
    if fidelity is None:
        return 1.0
    if isinstance(fidelity, bool) or not isinstance(fidelity, int | float) or not 0.0 <= float(fidelity) <= 1.0:
        raise errors.InvalidArgument(
            f"fidelity of result {name!r} must be a probability in [0, 1], got {fidelity!r}; leave it out for weight 1"
        )
    return float(fidelity)


def _union(rows: list[tuple[np.ndarray, np.ndarray]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, matrix): the sorted outcomes with a positive probability somewhere, and each row over them."""
    entries = sum(ids.size for ids, _ in rows)
    n = len(rows)
    if width <= MAX_INT_BITS and n << width <= MAX_CELLS and (1 << width) <= max(1 << 16, 4 * entries):
        dense = np.zeros((n, 1 << width))  # direct indexing: no sort needed
        for row, (ids, probabilities) in enumerate(rows):
            dense[row, ids] = probabilities
        keep = np.flatnonzero(dense.any(axis=0))
        return keep.astype(np.int64), dense[:, keep]
    union, inverse = np.unique(np.concatenate([ids for ids, _ in rows]), return_inverse=True)
    if n * union.size > MAX_CELLS:
        raise errors.InvalidArgument(
            f"{n} results over {union.size} distinct outcomes make a table of {n * union.size} cells: at most "
            f"{MAX_CELLS} per aggregation; aggregate fewer results at a time, or results over fewer outcomes")
    matrix = np.zeros((n, union.size))
    start = 0
    for row, (ids, probabilities) in enumerate(rows):
        matrix[row, inverse[start : start + ids.size]] = probabilities
        start += ids.size
    keep = np.flatnonzero(matrix.any(axis=0))
    return union[keep], matrix[:, keep]


# --- the four methods: table -> (aggregate distribution, normalised weights) ------------------------------


def _weighted_average(table: _Table) -> tuple[np.ndarray, np.ndarray]:
    total = table.fidelities.sum()
    if total <= 0:
        raise errors.InvalidArgument(
            "every result has fidelity 0, so weighted_average has nothing to weigh; give at least one result a "
            "fidelity above 0, or leave fidelity out for weight 1"
        )
    weights = table.fidelities / total
    return _normalised(weights @ table.probabilities), weights


def _majority_vote(table: _Table) -> tuple[np.ndarray, np.ndarray]:
    n = len(table.names)
    votes = np.count_nonzero(table.probabilities > 0, axis=0)
    winners = 2 * votes > n
    if not winners.any():
        winners = votes == votes.max()
    weights = np.full(n, 1.0 / n)
    return _normalised((weights @ table.probabilities) * winners), weights


def _confidence_weighted(table: _Table) -> tuple[np.ndarray, np.ndarray]:
    probabilities = table.probabilities
    median = np.median(probabilities, axis=0)
    consensus = median / median.sum() if median.sum() > 0 else probabilities.mean(axis=0)
    per_shot = max(1.0 - float(consensus @ consensus), 1.0 / float(table.shots.sum()))
    squared_distance = ((probabilities - consensus) ** 2).sum(axis=1)
    variance = np.maximum(per_shot / table.shots, squared_distance)
    precision = 1.0 / variance
    weights = precision / precision.sum()
    return _normalised(weights @ probabilities), weights


def _median(table: _Table) -> tuple[np.ndarray, np.ndarray]:
    median = np.median(table.probabilities, axis=0)
    if median.sum() <= 0:
        raise errors.AggregationFailed(
            "results too divergent for median: the per-outcome median is 0 for every outcome (no outcome was "
            "seen by at least half the backends); use weighted_average or check the backends"
        )
    n = len(table.names)
    return median / median.sum(), np.full(n, 1.0 / n)


def _normalised(p: np.ndarray) -> np.ndarray:
    return p / p.sum()


_COMBINERS: dict[str, Callable[[_Table], tuple[np.ndarray, np.ndarray]]] = {
    "weighted_average": _weighted_average,
    "majority_vote": _majority_vote,
    "confidence_weighted": _confidence_weighted,
    "median": _median,
}
assert set(_COMBINERS) == set(METHODS)


# --- divergence and confidence -----------------------------------------------------------------------------


def _disjoint_pairs(present: np.ndarray) -> tuple[list[tuple[int, int]], int]:
    """The first ten pairs (i < j) of results with no outcome in common, and how many there are, exactly.

    `present[i, x]`: result i saw outcome x (every result saw at least one). Each outcome's results are a bitset;
    the OR of the bitsets of a result's outcomes is every result it shares one with. The work is the table's
    entries times N/8 bytes, in blocks of results that bound the memory; no N x N x outcomes product is formed.
    """
    n = present.shape[0]
    if present.all(axis=0).any():  # an outcome every result saw: no pair is disjoint
        return [], 0
    by_outcome = np.packbits(present.T, axis=1, bitorder="little")  # (outcomes, ceil(n / 8))
    rows, outcomes = np.nonzero(present)  # row-major: each result's outcomes in one run
    starts = np.searchsorted(rows, np.arange(n + 1))
    found: list[tuple[int, int]] = []
    count = 0
    start = 0
    while start < n:
        # As many results as fit the budget: their gathered bitsets and their row of the pair matrix.
        stop = min(n, start + max(1, _BITSET_BLOCK // n))
        budget_end = starts[start] + max(1, _BITSET_BLOCK // by_outcome.shape[1])
        stop = max(start + 1, min(stop, int(np.searchsorted(starts, budget_end, side="right")) - 1))
        first_entry = starts[start]
        shared = np.bitwise_or.reduceat(by_outcome[outcomes[first_entry:starts[stop]]],
                                        starts[start:stop] - first_entry, axis=0)
        meets = np.unpackbits(shared, axis=1, count=n, bitorder="little").view(bool)
        apart = ~meets & (np.arange(n)[None, :] > np.arange(start, stop)[:, None])
        count += int(np.count_nonzero(apart))
        for row in range(stop - start):  # the first few by name, never every pair's indices
            if len(found) == 10:
                break
            found.extend((start + row, int(j)) for j in np.flatnonzero(apart[row])[: 10 - len(found)])
        start = stop
    return found, count


def _check_divergence(
    method: str, table: _Table, distances: np.ndarray, disjoint_pairs: tuple[list[tuple[int, int]], int],
    max_divergence: float,
) -> None:
    names = table.names
    listed = ", ".join(f"{name}={d:.3f}" for name, d in zip(names, distances.tolist(), strict=True))
    pairs, count = disjoint_pairs
    disjoint = [f"{names[i]} and {names[j]}" for i, j in pairs]
    if count > len(pairs):
        disjoint.append(f"{count - len(pairs)} more pairs")
    if disjoint:
        raise errors.AggregationFailed(
            f"results too divergent for {method}: {'; '.join(disjoint)} have no outcome in common (Hellinger "
            f"distance 1). Hellinger distances from the aggregate: {listed}",
            distances=listed,
        )
    failing = np.flatnonzero(distances > max_divergence)
    if failing.size:
        over = ", ".join(f"{names[i]}={distances[i]:.3f}" for i in failing)
        advice = "check those backends or the circuit, or raise max_divergence"
        outcomes, shots = table.ids.size, int(table.shots[failing].min())
        noise_floor = math.sqrt((outcomes - 1) / (8 * shots))
        if noise_floor > 0.5 * max_divergence:  # the distances may be mostly shot noise
            advice = (
                f"with {outcomes} outcomes and {shots} shots, shot noise alone puts a result about "
                f"{min(noise_floor, 1.0):.2f} from the true distribution: run more shots, or raise max_divergence"
            )
        raise errors.AggregationFailed(
            f"results too divergent for {method}: Hellinger distance from the aggregate above max_divergence="
            f"{max_divergence:g} for {over} (all: {listed}); {advice}",
            distances=listed,
            max_divergence=max_divergence,
        )


def _confidence(consensus: np.ndarray, weights: np.ndarray, table: _Table, roots: np.ndarray) -> float:
    agreement = _agreement(weights, table, roots)
    effective_shots = 1.0 / float((weights**2 / table.shots).sum())
    spread = float(np.sqrt(consensus * (1.0 - consensus) / (2 * math.pi * effective_shots)).sum())
    unseen = table.singletons / float(table.shots.sum())
    sampling_error = min(1.0, spread + unseen)
    return min(1.0, max(0.0, agreement * (1.0 - sampling_error)))


def _agreement(weights: np.ndarray, table: _Table, roots: np.ndarray) -> float:
    """The weighted mean over pairs of results of 1 - H, H the Hellinger distance between them beyond what shot
    noise explains. Every pair up to EXACT_PAIRS results; beyond, each result with the PARTNERS weightiest."""
    n = len(weights)
    partners = np.arange(n) if n <= EXACT_PAIRS else np.argsort(-weights, kind="stable")[:PARTNERS]
    overlaps = roots @ roots[partners].T  # (n, P)
    noise = _shot_noise(table.probabilities, table.shots, partners)
    # Each unordered pair once: (i, j) with j a partner, and i either not a partner or before j among them.
    rank = np.full(n, n)
    rank[partners] = np.arange(partners.size)
    keep = rank[:, None] < np.arange(partners.size)[None, :]
    keep |= (rank == n)[:, None]
    pair_weights = np.outer(weights, weights[partners]) * keep
    total = pair_weights.sum()
    if total <= 0:
        return 1.0
    excess = np.clip(1.0 - overlaps - noise, 0.0, 1.0)
    return float((pair_weights * (1.0 - np.sqrt(excess))).sum() / total)


def _shot_noise(p: np.ndarray, shots: np.ndarray, partners: np.ndarray) -> np.ndarray:
    """(N, P): expected squared Hellinger distance between result i and partner j if both sampled one
    distribution. Per pair: 1/2 sum_x min((1 - m_x) s_ij, 2 m_x) with m = (p_i + p_j) / 2 and
    s_ij = (1/N_i + 1/N_j) / 4, for blocks of rows at once (at most _PAIR_BLOCK pair-outcomes per block)."""
    n, k = p.shape
    q = p[partners]
    inverse_shots = 1.0 / shots
    noise = np.empty((n, partners.size))
    rows = max(1, _PAIR_BLOCK // max(1, partners.size * k))
    for start in range(0, n, rows):
        block = slice(start, min(n, start + rows))
        twice_m = p[block, None, :] + q[None, :, :]  # (b, P, k)
        scale = 0.25 * (inverse_shots[block, None] + inverse_shots[None, partners])  # (b, P)
        term = np.minimum((1.0 - 0.5 * twice_m) * scale[:, :, None], twice_m)
        noise[block] = 0.5 * term.sum(axis=2)
    return noise
