"""The eps search of a ``"table"`` recipe: the budgets at which an attack gives the natural
model 20/30/40/50 % error (stage ``search-<attack>``)."""
from __future__ import annotations

import logging
from typing import Any, Callable

__all__ = ["search_eps"]

log = logging.getLogger(__name__)


def search_eps(error_at: Callable[[float], float], targets: tuple[float, ...], hi: float, iters: int,
               max_hi: float = 1.0) -> dict[str, Any]:
    """Find eps where ``error_at(eps)`` (an attack error, roughly increasing in eps) is near
    each target, by bisection that shares every evaluation between targets.

    The bracket starts at ``[0, hi]``; ``hi`` doubles (up to ``max_hi``) while its error is
    below the largest target. For each target, the bracket is narrowed from the evaluated
    points on either side of it, then bisected ``iters`` times; the chosen eps is the
    evaluated one (over all targets' evaluations) whose error is nearest the target (ties:
    the smaller eps). A target below the error at eps -> 0 (the clean error) cannot be
    reached; it gets the smallest-error eps found.
    Returns ``{"targets", "eps", "errors", "evaluated": [[eps, error], ...]}``.
    """
    cache: dict[float, float] = {}

    def f(e: float) -> float:
        e = float(f"{e:.6g}")
        if e not in cache:
            cache[e] = float(error_at(e))
            log.info("eps search: eps %.6g -> attack error %.3f", e, cache[e])
        return cache[e]

    while f(hi) < max(targets) and hi < max_hi:
        hi = min(2 * hi, max_hi)
    for target in targets:
        below = [e for e, v in cache.items() if v < target]
        lo = max(below, default=0.0)
        above = [e for e, v in cache.items() if v >= target and e > lo]
        top = min(above, default=hi)
        for _ in range(iters):
            mid = (lo + top) / 2
            if f(mid) < target:
                lo = mid
            else:
                top = mid
    # choose from every evaluation, so a later target's bisection can serve an earlier one
    chosen = [min(cache, key=lambda e: (abs(cache[e] - t), e)) for t in targets]
    return {"targets": list(targets), "eps": chosen, "errors": [cache[e] for e in chosen],
            "evaluated": sorted([e, v] for e, v in cache.items())}
