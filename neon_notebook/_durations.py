"""One rule for arguments that are durations: a real number (never a bool), finite, in bounds.

The session's timeouts, ``keep_warm``, the local compute's lifecycle settings and
the CLI's flags all check with it, each raising its own error in its own words.
"""

from __future__ import annotations

import math


def is_seconds(value: object, *, positive: bool = False, most: float = math.inf) -> bool:
    """Whether ``value`` is a finite number >= 0 (> 0 if ``positive``) and at most ``most``."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and (value > 0 if positive else value >= 0) and value <= most)
