"""The Prometheus text format (version 0.0.4) for the families whose samples grow with the number of objects:
one sample per queue, channel or connection, each with its labels.

Why not prometheus-client here (it serves everything else): its ``generate_latest`` spends about 30 us per
sample (label-name validation, sorting and escaping each sample's labels anew, a Sample tuple per sample)
and ``add_metric`` another 10 us. With 50,000 queues and a dozen queue families that is over 20 s per
scrape, where RabbitMQ answers in seconds. benchmarks/management_scale.py measured it; here a label set
is escaped once per object and reused by every family, which brings a sample to well under a microsecond.
The output is the same format prometheus-client writes (tests parse both with its parser).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def escape_label_value(value: str) -> str:
    """Text format escaping of a label value: backslash, double quote and line feed."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def labels(names: Sequence[str], values: Sequence[str]) -> str:
    """``{a="x",b="y"}`` for one object: built once, used by every family of that object."""
    return "{" + ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True)) + "}"


def number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def family_text(name: str, kind: str, help_: str, samples: Iterable[tuple[str, float]]) -> str:
    """One family: its HELP and TYPE lines, then ``name{labels} value`` per sample (``samples`` gives the
    prebuilt label string and the value)."""
    escaped_help = help_.replace("\\", "\\\\").replace("\n", "\\n")
    head = f"# HELP {name} {escaped_help}\n# TYPE {name} {kind}\n"
    # ints (nearly every value) need no formatting help: only the other values go through number()
    body = "".join([f"{name}{label} {value if value.__class__ is int else number(value)}\n" for label, value in samples])
    return head + body
