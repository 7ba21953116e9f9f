"""Checks a node's outputs against its declared output fields. No I/O."""
from __future__ import annotations

from typing import Any

from engine.errors import PermanentNodeError

_CHECKS: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "object": (dict,), "array": (list,),
}


def check_outputs(node_id: str, outputs: Any, declared: dict[str, str] | None) -> None:
    """Raise PermanentNodeError naming the node and field when outputs break the declaration."""
    if not isinstance(outputs, dict):
        raise PermanentNodeError(f"Node {node_id} returned {type(outputs).__name__}, expected an object.")
    for name, type_name in (declared or {}).items():
        if name not in outputs:
            raise PermanentNodeError(f"Node {node_id} did not produce its declared output '{name}'.",
                                     node_id=node_id, field=f"outputs.{name}")
        value, allowed = outputs[name], _CHECKS.get(type_name)
        if value is None or allowed is None:
            continue
        wrong_bool = isinstance(value, bool) and type_name in ("integer", "number")
        if wrong_bool or not isinstance(value, allowed):
            raise PermanentNodeError(
                f"Node {node_id} output '{name}' is {type(value).__name__}, declared {type_name}.",
                node_id=node_id, field=f"outputs.{name}")
