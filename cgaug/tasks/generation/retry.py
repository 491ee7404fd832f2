"""What happens to a generated sample after its verdict: accept it, retry, recompose, or reject it for good.

A retry keeps the composition and prompt and generates again with the seed of the next
attempt; a recomposition draws a new composition and prompt first. The policy is bounded,
so the shard loop always ends.
"""

from __future__ import annotations

from cgaug.config import FilterConfig

ACCEPT, RETRY, RECOMPOSE, REJECT = "accept", "retry", "recompose", "reject"


def next_action(passed: bool, attempt: int, first_attempt: int, recomposed: bool, cfg: FilterConfig) -> str:
    """What to do after attempt `attempt` of a composition whose first attempt was `first_attempt`.

    Each composition gets at most `max_attempts` generations; with `recompose_after_last_failure`,
    one new composition gets as many again. So a sample never takes more than 2 x max_attempts.
    """
    if passed:
        return ACCEPT
    if attempt + 1 < first_attempt + cfg.max_attempts:
        return RETRY
    if cfg.recompose_after_last_failure and not recomposed:
        return RECOMPOSE
    return REJECT
