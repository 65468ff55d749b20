"""Argument types shared by the `medgen` commands (no heavy imports: `medgen --help` loads this)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_in_range(low: int = 1, high: int | None = None) -> Callable[[str], int]:
    """An argparse `type` accepting integers in `[low, high]`; anything else is a usage error naming the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            upper = high if high is not None else "inf"
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {upper}], got {value}")
        return value

    return parse


positive_int = int_in_range(1)
