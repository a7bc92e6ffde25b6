"""Permission and topic-permission patterns: RabbitMQ's regular expressions, matched in linear time.

RabbitMQ matches a permission regex with Erlang's ``re`` (PCRE, a backtracking engine): a pattern such
as ``^(a+)+$`` takes exponential time on a name that almost matches, and every operation of the user pays
it. mailslot compiles patterns with RE2 (``google-re2``), which never backtracks: a match costs time linear
in the name, whatever the pattern. The rule this gives, checked when a pattern is set:

* every PCRE feature RE2 runs in linear time is accepted with PCRE's meaning (classes, anchors,
  alternation, counted repetition, ``(?i)``, non-greedy quantifiers ...);
* the features that need backtracking, backreferences (``\\1``) and lookaround (``(?=``, ``(?!``,
  ``(?<=``, ``(?<!``), are refused with the reason, as is a pattern longer than
  :data:`MAX_PATTERN_LENGTH` or one whose compiled program would exceed :data:`MAX_PROGRAM_MEMORY`
  (``a{1000}{1000}``);
* as in RabbitMQ, the empty pattern means ``^$`` (matches only the empty name) and a pattern is searched
  for anywhere in the name (``re:run`` without anchors): ``.*`` allows everything.

Topic permissions may use ``{username}`` and ``{vhost}``; RabbitMQ pastes the values in unescaped, so a
user named ``a.*`` would widen its own pattern. mailslot escapes them first (:func:`expand_variables`).
"""

from __future__ import annotations

import re
from typing import Any

import re2

from ..errors import PreconditionFailed

#: Longest pattern accepted. RabbitMQ sets no bound; 4096 characters is far above any real permission
#: pattern (names are at most 255 bytes) and keeps one bad definitions file from costing much to compile.
MAX_PATTERN_LENGTH = 4096
#: Memory RE2 may use for one compiled pattern (its own default is 8 MiB): counted repetitions that
#: blow up (``(a{100}){100}``) are refused at set time instead of taking memory at every check.
MAX_PROGRAM_MEMORY = 1 << 20

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is reported to whoever set it, not printed on stderr
_OPTIONS.never_capture = True  # only "does it match" is asked: no capture bookkeeping
_OPTIONS.max_mem = MAX_PROGRAM_MEMORY

_BACKTRACKING = re.compile(r"\(\?<?[=!]|\\[1-9]")


class InvalidPattern(PreconditionFailed):
    """A permission pattern mailslot refuses; the text says why."""


class Pattern:
    """One compiled permission pattern: ``matches(name)``, linear in ``len(name)``."""

    __slots__ = ("_compiled", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._compiled: Any = compile_pattern(source)

    def matches(self, name: str) -> bool:
        return self._compiled.search(name) is not None

    def __repr__(self) -> str:
        return f"Pattern({self.source!r})"


def compile_pattern(source: str) -> Any:
    """RE2 program for ``source`` (the empty pattern is ``^$``), or :class:`InvalidPattern`."""
    if len(source) > MAX_PATTERN_LENGTH:
        raise InvalidPattern(f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
    try:
        return re2.compile(source or "^$", _OPTIONS)
    except re2.error as error:
        hint = (
            "backreferences and lookaround need a backtracking matcher, which mailslot does not run "
            "(see docs/access-control.md)"
            if _BACKTRACKING.search(source)
            else _reason(error)
        )
        raise InvalidPattern(f"invalid pattern '{source}': {hint}") from None


def expand_variables(source: str, variables: dict[str, str]) -> str:
    """``{username}`` and ``{vhost}`` (any ``{key}`` given) replaced by their regex-escaped values."""
    for key, value in variables.items():
        source = source.replace("{" + key + "}", re.escape(value))
    return source


def _reason(error: Exception) -> str:
    text = error.args[0] if error.args else str(error)
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return str(text) or "pattern too large"
