"""Hypothesis settings for the fuzz suites: a modest budget for CI by default; HYPOTHESIS_PROFILE=long
(what scripts/fuzz sets) runs many more examples. FUZZ_EXAMPLES overrides either count."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                                       HealthCheck.filter_too_much]}
_LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20000" if _LONG else "150"))
FUZZ_SETTINGS = settings(max_examples=_EXAMPLES, **_COMMON)


def scaled(fraction: float) -> settings:
    """The same settings with a fraction of the examples (for properties that run several connections)."""
    return settings(max_examples=max(10, int(_EXAMPLES * fraction)), **_COMMON)
