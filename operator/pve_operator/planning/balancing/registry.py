"""Strategies by name: the five built in, and ``register`` for more.

The operator picks a migration strategy by name (``rebalance`` for the Relieve objective, ``level`` for
Level; ``firstFit`` reproduces the lab) and always runs ``offload`` and ``restore`` after it when offload is not Off.
"""

from __future__ import annotations

from typing import Any

from pve_operator.planning.balancing import first_fit, level, offload, rebalance, restore
from pve_operator.planning.balancing.strategy import Strategy

_REGISTRY: dict[str, Strategy[Any]] = {}


def register(strategy: Strategy[Any]) -> None:
    """Add a strategy; a name can be registered once."""
    if strategy.name in _REGISTRY:
        raise ValueError(f"a balancing strategy named {strategy.name!r} is already registered")
    _REGISTRY[strategy.name] = strategy


def get_strategy(name: str) -> Strategy[Any]:
    """The strategy registered as ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown balancing strategy {name!r} (known: {', '.join(strategy_names())})") from None


def strategy_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


for _builtin in (rebalance.STRATEGY, level.STRATEGY, offload.STRATEGY, restore.STRATEGY, first_fit.STRATEGY):
    register(_builtin)
