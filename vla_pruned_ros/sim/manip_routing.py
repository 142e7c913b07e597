"""Route planning on the table: the first corner of the shortest way to a goal around discs,
on a small visibility graph (numpy only; the manipulation experts walk round blocks with it)."""

from __future__ import annotations

import math

import numpy as np


def next_waypoint(
    tip: np.ndarray, goal: np.ndarray, discs: list[tuple[np.ndarray, float]]
) -> np.ndarray:
    """The first corner of the shortest way to `goal` around the discs, on a small visibility
    graph (points on a ring around each disc). Discs holding the tip or the goal are ignored
    for the edges that leave or enter them, so a perturbed tip can always get out."""
    centres = np.array([c for c, _ in discs])
    radii = np.array([r for _, r in discs])
    if _seg_clear(tip[None], goal[None], *_outside(tip, goal, centres, radii))[0, 0]:
        return goal
    nodes, to_goal = _graph(goal, centres, radii)
    total = np.where(
        _seg_clear(tip[None], nodes, *_outside(tip, None, centres, radii))[0],
        np.linalg.norm(nodes - tip, axis=1) + to_goal,
        np.inf,
    )
    best = int(np.argmin(total))
    return nodes[best] if np.isfinite(total[best]) else goal


def _seg_clear(a: np.ndarray, b: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Whether each segment a[i] -> b[j] misses every disc: a bool matrix (len(a), len(b))."""
    seg = b[None, :, :] - a[:, None, :]  # (A, B, 2)
    rel = centres[None, None, :, :] - a[:, None, None, :]  # (A, 1, D, 2)
    length2 = np.maximum(np.sum(seg * seg, -1), 1e-12)[..., None]  # (A, B, 1)
    t = np.clip(np.sum(rel * seg[:, :, None, :], -1) / length2, 0.0, 1.0)  # (A, B, D)
    closest = a[:, None, None, :] + t[..., None] * seg[:, :, None, :]
    dist = np.linalg.norm(closest - centres[None, None], axis=-1)
    return np.all(dist >= radii, axis=-1)


_GRAPHS: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}


def _graph(
    goal: np.ndarray, centres: np.ndarray, radii: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Graph nodes (the goal first) and each one's shortest distance to the goal. Cached: the
    scene stands still while the tip travels, so only the tip's own edges change per step."""
    goal, centres = np.round(goal, 3), np.round(centres, 3)  # the graph depends on the key
    key = np.concatenate([goal, centres.ravel(), radii]).tobytes()  # alone: deterministic
    if key in _GRAPHS:
        return _GRAPHS[key]
    angles = np.linspace(0.0, 2 * math.pi, 8, endpoint=False)
    ring = np.stack([np.cos(angles), np.sin(angles)], -1) / math.cos(math.pi / 8)
    ring_pts = (centres[:, None, :] + (radii[:, None, None] + 0.005) * ring[None]).reshape(-1, 2)
    inside = np.linalg.norm(ring_pts[:, None] - centres[None], axis=-1) < radii[None] - 1e-9
    nodes = np.vstack([goal, ring_pts[~inside.any(1)]])
    clear = _seg_clear(nodes, nodes, centres, radii)
    clear[0] = _seg_clear(goal[None], nodes, *_outside(goal, None, centres, radii))[0]
    clear = clear | clear.T
    cost = np.where(clear, np.linalg.norm(nodes[:, None] - nodes[None], axis=-1), np.inf)
    dist = np.full(len(nodes), np.inf)
    dist[0] = 0.0
    done = np.zeros(len(nodes), bool)
    for _ in range(len(nodes)):  # Dijkstra on a dense matrix: a few dozen nodes
        i = int(np.argmin(np.where(done, np.inf, dist)))
        if not np.isfinite(dist[i]):
            break
        done[i] = True
        dist = np.minimum(dist, dist[i] + cost[i])
    if len(_GRAPHS) > 256:
        _GRAPHS.clear()
    _GRAPHS[key] = (nodes, dist)
    return nodes, dist


def clear_cache() -> None:
    """Forget the cached graphs (a test that actions do not depend on earlier episodes)."""
    _GRAPHS.clear()


def _outside(
    p: np.ndarray, q: np.ndarray | None, centres: np.ndarray, radii: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The discs that hold neither p nor q (those that do cannot be avoided from there)."""
    keep = np.linalg.norm(centres - p, axis=1) >= radii
    if q is not None:
        keep &= np.linalg.norm(centres - q, axis=1) >= radii
    return centres[keep], radii[keep]
