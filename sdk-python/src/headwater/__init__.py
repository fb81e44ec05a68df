"""Headwater's Python SDK: write stream-processing UDFs as plain Python functions.

>>> import headwater as hw
>>> @hw.map
... def double(record: dict) -> dict:
...     return {**record, "n": record["n"] * 2}
"""

from headwater.functions import (
    Format,
    Function,
    KeyedContext,
    Kind,
    TransientError,
    WindowAggregate,
    filter,
    flat_map,
    keyed_process,
    map,
    registry,
    window_aggregate,
)

__version__ = "0.1.0"

__all__ = [
    "Format",
    "Function",
    "KeyedContext",
    "Kind",
    "TransientError",
    "WindowAggregate",
    "__version__",
    "filter",
    "flat_map",
    "keyed_process",
    "map",
    "registry",
    "window_aggregate",
]
