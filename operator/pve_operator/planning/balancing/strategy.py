"""The strategy contract: a name, the stage it plans, an args model with defaults, and ``propose``.

Each strategy module builds one :class:`Strategy` and the registry (``registry.py``) lists them by name,
like the descheduler's plugins: limits, ordering, dry-run (Recommend) and execution are applied once,
outside the strategies. Args are frozen dataclasses that validate themselves in ``__post_init__``;
:meth:`Strategy.parse_args` builds them from a camelCase mapping (a CRD or config section) and rejects
unknown keys, so a typo fails loudly instead of silently using a default.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pve_operator.planning.balancing.inputs import BalancingInput
from pve_operator.planning.balancing.proposal import Proposal, Stage

ArgsT = TypeVar("ArgsT")

_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")


def snake_case(name: str) -> str:
    return _CAMEL_BOUNDARY.sub("_", name).lower()


@dataclass(frozen=True)
class Strategy(Generic[ArgsT]):
    """One balancing strategy."""

    name: str
    stage: Stage
    args_type: type[ArgsT]
    propose_fn: Callable[[BalancingInput, ArgsT], Proposal]
    description: str

    def default_args(self) -> ArgsT:
        return self.args_type()

    def parse_args(self, raw: Mapping[str, object]) -> ArgsT:
        """Args from a mapping with camelCase or snake_case keys; unknown keys raise ``ValueError``."""
        if not dataclasses.is_dataclass(self.args_type):
            raise TypeError(f"args of strategy {self.name} are not a dataclass")
        known = {f.name for f in dataclasses.fields(self.args_type)}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            name = snake_case(key)
            if name not in known:
                raise ValueError(f"strategy {self.name} has no argument {key!r} (known: {', '.join(sorted(known))})")
            values[name] = value
        return self.args_type(**values)

    def propose(self, inp: BalancingInput, args: ArgsT | None = None) -> Proposal:
        if args is not None and not isinstance(args, self.args_type):
            raise TypeError(f"strategy {self.name} takes {self.args_type.__name__}, got {type(args).__name__}")
        return self.propose_fn(inp, args if args is not None else self.default_args())
