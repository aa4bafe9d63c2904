"""Parameters written back as the text of a ``kedro run --params`` option (for child runs we launch)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def params_text(params: Mapping[str, Any]) -> str:
    """``{"a.b": 1, "c": None}`` -> ``"a.b=1,c=null"``; Kedro splits on commas, so a value cannot hold one."""
    def text(value: Any) -> str:
        if value is None:
            return "null"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, (list, tuple, dict)) or "," in str(value):
            raise ValueError(f"--params cannot carry {value!r}; set it in a conf/<env> file")
        return str(value)

    return ",".join(f"{key}={text(value)}" for key, value in params.items())
