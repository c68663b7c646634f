"""Cannot-link: two faces of one tile are two people, so they never share a cluster.

Two places enforce it: refusing merges of clusters that share a tile
(``merge_by_average_linkage``), and attaching faces per tile with an optimal assignment
(``attach_with_cannot_link``, ``resolve_tile_collisions``). Vectors are L2-normalised rows, so cosine is a dot product.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

# Pair scores are computed this many groups at a time, to bound memory on large albums.
_SCORE_CHUNK = 1024


def has_tile_conflict(tiles: np.ndarray) -> bool:
    return len(np.unique(tiles)) < len(tiles)


def unit_rows(vectors: np.ndarray, dtype: type | None = None) -> np.ndarray:
    """Each row scaled to length 1 (a zero row stays zero), in ``dtype`` when given."""
    vectors = np.asarray(vectors, dtype=dtype)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _assign_per_tile(
    scores: np.ndarray, tiles: np.ndarray, allowed: np.ndarray | None = None
) -> np.ndarray:
    """Best group per face such that faces of one tile land in different groups (Hungarian per
    tile). ``scores`` is faces x groups; -1 where no allowed group is left for a face."""
    choice = np.full(len(scores), -1, dtype=np.int64)
    if scores.shape[1] == 0:
        return choice
    masked = scores if allowed is None else np.where(allowed, scores, -np.inf)
    order = np.argsort(tiles, kind="stable")
    boundaries = np.flatnonzero(np.diff(tiles[order])) + 1
    for members in np.split(order, boundaries):
        block = masked[members]
        if len(members) == 1:
            best = int(np.argmax(block[0]))
            if np.isfinite(block[0, best]):
                choice[members[0]] = best
            continue
        finite = np.isfinite(block)
        # linear_sum_assignment needs finite costs: forbidden pairs get a cost no real pair beats.
        cost = np.where(finite, -block, 1e6)
        rows, cols = linear_sum_assignment(cost)
        for row, col in zip(rows, cols, strict=True):
            if finite[row, col]:
                choice[members[row]] = col
    return choice


def merge_by_average_linkage(
    groups: Sequence[np.ndarray],
    vectors: np.ndarray,
    tiles: np.ndarray,
    min_mean_cosine: float,
) -> list[list[int]]:
    """Greedy average-linkage merging of ``groups`` (index arrays into ``vectors``), best pair
    first, while the mean cosine over all cross pairs is at least ``min_mean_cosine``; two groups
    that share a tile are never merged. Returns lists of input group numbers, one per result.

    The mean cross-pair cosine of groups a and b is ``mean(a) . mean(b)`` (unnormalised means),
    so a merge only needs the merged mean, not the pairwise matrix.
    """
    count = len(groups)
    means = np.stack([vectors[g].mean(axis=0) for g in groups]) if count else np.zeros((0, 0))
    sizes = np.array([len(g) for g in groups], dtype=np.int64)
    tile_sets: list[set] = [set(tiles[g].tolist()) for g in groups]
    members: list[list[int]] = [[index] for index in range(count)]
    active = np.ones(count, dtype=bool)
    version = np.zeros(count, dtype=np.int64)
    heap: list[tuple[float, int, int, int, int]] = []

    def push_pairs(row: int, candidates: np.ndarray) -> None:
        scores = means[candidates] @ means[row]
        for other, score in zip(
            candidates[scores >= min_mean_cosine], scores[scores >= min_mean_cosine], strict=True
        ):
            a, b = (row, int(other)) if row < other else (int(other), row)
            heapq.heappush(heap, (-float(score), a, b, int(version[a]), int(version[b])))

    for start in range(0, count, _SCORE_CHUNK):
        rows = np.arange(start, min(start + _SCORE_CHUNK, count))
        block = means[rows] @ means.T
        for local, row in enumerate(rows):
            above = np.flatnonzero(block[local, row + 1 :] >= min_mean_cosine) + row + 1
            for other in above:
                heapq.heappush(heap, (-float(block[local, other]), int(row), int(other), 0, 0))

    while heap:
        _, a, b, version_a, version_b = heapq.heappop(heap)
        if not (active[a] and active[b]) or version[a] != version_a or version[b] != version_b:
            continue  # stale: one side changed since this score was computed
        if tile_sets[a] & tile_sets[b]:
            continue  # cannot-link; tile sets only grow, so this pair stays forbidden
        total = sizes[a] + sizes[b]
        means[a] = (means[a] * sizes[a] + means[b] * sizes[b]) / total
        sizes[a] = total
        tile_sets[a] |= tile_sets[b]
        members[a].extend(members[b])
        active[b] = False
        version[a] += 1
        others = np.flatnonzero(active)
        push_pairs(a, others[others != a])
    return [sorted(members[index]) for index in np.flatnonzero(active)]


def attach_with_cannot_link(
    vectors: np.ndarray,
    centroids: np.ndarray,
    tiles: np.ndarray,
    cluster_tiles: Sequence[set],
    min_cosine: np.ndarray,
    margin: float,
) -> np.ndarray:
    """Which cluster (row of ``centroids``) each face of ``vectors`` joins, or -1.

    A face may only join its best allowed cluster, and only when that cosine is at least
    ``min_cosine`` (per face) and beats every other allowed cluster by ``margin``. A cluster is
    not allowed for a face when it already holds a face of the same tile (``cluster_tiles``).
    Faces of one tile are then assigned jointly (Hungarian), so two of them never join the same
    cluster: the closer one wins, the other stays out.
    """
    faces, clusters = len(vectors), len(centroids)
    candidate = np.full(faces, -1, dtype=np.int64)
    if faces == 0 or clusters == 0:
        return candidate
    score = np.full(faces, -np.inf)
    clusters_of_tile: dict[object, list[int]] = {}
    for index, tile_set in enumerate(cluster_tiles):
        for tile in tile_set:
            clusters_of_tile.setdefault(tile, []).append(index)
    for start in range(0, faces, _SCORE_CHUNK):
        rows = np.arange(start, min(start + _SCORE_CHUNK, faces))
        block = (vectors[rows] @ centroids.T).astype(np.float64)
        for local, row in enumerate(rows):
            taken = clusters_of_tile.get(tiles[row])
            if taken:
                block[local, taken] = -np.inf
        best = np.argmax(block, axis=1)
        best_score = block[np.arange(len(rows)), best]
        if clusters > 1:
            block[np.arange(len(rows)), best] = -np.inf
            runner_up = block.max(axis=1)
        else:
            runner_up = np.full(len(rows), -np.inf)
        confident = (best_score >= min_cosine[rows]) & (best_score - runner_up >= margin)
        candidate[rows[confident]] = best[confident]
        score[rows[confident]] = best_score[confident]
    return resolve_tile_collisions(candidate, score, tiles)


def resolve_tile_collisions(
    candidate: np.ndarray, score: np.ndarray, tiles: np.ndarray
) -> np.ndarray:
    """Faces of one tile that want the same cluster: an optimal one-to-one assignment decides."""
    result = candidate.copy()
    wanting = np.flatnonzero(candidate >= 0)
    by_tile: dict[object, list[int]] = {}
    for face in wanting:
        by_tile.setdefault(tiles[face], []).append(int(face))
    for members in by_tile.values():
        wanted = candidate[members]
        if len(members) == 1 or len(np.unique(wanted)) == len(members):
            continue
        local_clusters, local_index = np.unique(wanted, return_inverse=True)
        block = np.full((len(members), len(local_clusters)), -np.inf)
        block[np.arange(len(members)), local_index] = score[members]
        choice = _assign_per_tile(block, np.zeros(len(members), dtype=np.int64))
        result[members] = np.where(choice >= 0, local_clusters[np.maximum(choice, 0)], -1)
    return result
