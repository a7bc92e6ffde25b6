"""Configuration from a TOML file, ``MAILSLOT_*`` environment variables and flags, checked against one
typed schema that is derived from a dataclass (``BrokerConfig``). docs/configuration.md for users.

Rules of this module:

* The dataclass IS the schema. Every field is a key of the file (same name) and an environment variable
  ``MAILSLOT_<NAME IN UPPER CASE>``, with no list of keys to keep in step: a new ``BrokerConfig`` field
  is configurable the moment it exists. A field whose type cannot come from text (a callable for tests)
  says so with ``field(metadata={"config": False})``; any other unsupported type fails when the schema
  is built (a unit test builds it), never silently.
* Values are checked against the field's annotation (see :func:`_convert`); a value the type accepts
  but the broker cannot use (a port above 65535, a message size above 512 MiB) is the dataclass's own
  ``__post_init__``'s business: it raises :class:`ConfigError` naming the field.
* Precedence, highest first: flags > environment > file > the dataclass's defaults.
* Secrets: any text key ``K`` may be given as ``K_file`` instead (file and environment): the value is
  read from that file, one trailing newline stripped (Docker / Kubernetes secrets).
* Every problem is one :class:`ConfigError` whose text names the key, the problem and where the value
  came from, e.g. ``tls_port: expected an integer, got 'abc' (MAILSLOT_TLS_PORT)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "MAILSLOT_"
SECRET_SUFFIX = "_file"
# Written for "none" on the command line, in the environment or in the file: the setting is off (a
# listener that does not listen, a timeout that never fires). RabbitMQ's ``listeners.tcp = none``.
NONE_WORDS = frozenset({"none", "off"})
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


class ConfigError(ValueError):
    """A setting that cannot be used: ``key``, ``problem`` and, once known, where it came from."""

    def __init__(self, key: str, problem: str, source: str = "") -> None:
        self.key, self.problem, self.source = key, problem, source
        super().__init__(f"{key}: {problem}" + (f" ({source})" if source else ""))

    def from_source(self, source: str) -> ConfigError:
        return self if self.source or not source else ConfigError(self.key, self.problem, source)


@dataclass(frozen=True, slots=True)
class Setting:
    """One key of the schema: the dataclass field, its annotation, and whether text can name a file."""

    name: str
    annotation: Any
    default: Any

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def takes_file(self) -> bool:
        """Text settings may be read from a file (``<name>_file``)."""
        return _accepts_text(self.annotation)


class Schema:
    """The settings of a dataclass; :meth:`build` makes an instance from layered sources."""

    def __init__(self, cls: type[Any]) -> None:
        self.cls = cls
        hints = typing.get_type_hints(cls)
        self.settings: dict[str, Setting] = {}
        for f in dataclasses.fields(cls):
            if not f.init or f.metadata.get("config", True) is False:
                continue
            annotation = hints[f.name]
            _check_supported(f.name, annotation)
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = dataclasses.MISSING
            self.settings[f.name] = Setting(f.name, annotation, default)

    # ---- sources ---------------------------------------------------------------------------------

    def from_file(self, path: Path) -> dict[str, tuple[Any, str]]:
        """The settings of a TOML file: ``{name: (value, source)}``. Tables name prefixes: ``[tls]`` then
        ``port = 5671`` is ``tls_port`` (a table named after a table-typed setting is that setting)."""
        source = str(path)
        try:
            with open(path, "rb") as file:
                document = tomllib.load(file)
        except OSError as error:
            raise ConfigError("config", f"cannot read {path}: {error.strerror or error}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError("config", f"{path} is not valid TOML: {error}") from None
        raw: dict[str, tuple[Any, str]] = {}
        self._flatten(document, "", raw, source)
        return self._resolve(raw, from_text=False)

    def _flatten(self, table: Mapping[str, Any], prefix: str, out: dict[str, tuple[Any, str]], source: str) -> None:
        for key, value in table.items():
            name = prefix + key
            if isinstance(value, dict) and name not in self.settings:
                self._flatten(value, name + "_", out, source)
            else:
                out[name] = (value, source)

    def from_env(self, environ: Mapping[str, str] | None = None) -> dict[str, tuple[Any, str]]:
        """``MAILSLOT_<NAME>`` (and ``MAILSLOT_<NAME>_FILE`` for text settings) for every setting. Other
        ``MAILSLOT_`` variables are left alone: the client commands and the tests have their own."""
        environ = os.environ if environ is None else environ
        raw: dict[str, tuple[Any, str]] = {}
        for setting in self.settings.values():
            if setting.env in environ:
                raw[setting.name] = (environ[setting.env], setting.env)
            if setting.takes_file and setting.env + "_FILE" in environ:
                raw[setting.name + SECRET_SUFFIX] = (environ[setting.env + "_FILE"], setting.env + "_FILE")
        return self._resolve(raw, from_text=True)

    def unknown_env(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """``MAILSLOT_`` variables that look like a misspelt setting (for a warning, not an error)."""
        environ = os.environ if environ is None else environ
        known = {s.env for s in self.settings.values()} | {s.env + "_FILE" for s in self.settings.values()}
        out = []
        for variable in environ:
            if variable.startswith(ENV_PREFIX) and variable not in known:
                close = difflib.get_close_matches(variable, known, n=1, cutoff=0.85)
                if close:
                    out.append(f"{variable} is not a setting (did you mean {close[0]}?)")
        return out

    def from_flags(self, flags: Mapping[str, tuple[Any, str]]) -> dict[str, tuple[Any, str]]:
        """Values the command line gave (``{name: (value, "--flag")}``): typed by the parser, or text."""
        out: dict[str, tuple[Any, str]] = {}
        for name, (value, source) in flags.items():
            if name not in self.settings:
                raise ConfigError(name, "not a setting of the broker", source)
            out[name] = (self._convert(name, value, source, from_text=isinstance(value, str)), source)
        return out

    # ---- building --------------------------------------------------------------------------------

    def build(self, *layers: Mapping[str, tuple[Any, str]]) -> Any:
        """An instance from ``layers``, lowest precedence first (file, env, flags); unset keys keep the
        dataclass defaults. The dataclass's own checks name the key and, here, its source."""
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for layer in layers:
            for name, (value, source) in layer.items():
                values[name] = value
                sources[name] = source
        try:
            return self.cls(**values)
        except ConfigError as error:
            raise error.from_source(sources.get(error.key, "")) from None

    def load(
        self,
        file: Path | None = None,
        environ: Mapping[str, str] | None = None,
        flags: Mapping[str, tuple[Any, str]] | None = None,
    ) -> Any:
        """flags > environment > file > defaults."""
        layers = [self.from_file(file)] if file is not None else []
        layers.append(self.from_env(environ))
        layers.append(self.from_flags(flags or {}))
        return self.build(*layers)

    # ---- internals -------------------------------------------------------------------------------

    def _resolve(self, raw: Mapping[str, tuple[Any, str]], *, from_text: bool) -> dict[str, tuple[Any, str]]:
        """Check names, read ``_file`` secrets, convert values: ``{name: (value, source)}``."""
        out: dict[str, tuple[Any, str]] = {}
        for key, (value, source) in raw.items():
            name = key
            text = from_text
            if key not in self.settings and key.endswith(SECRET_SUFFIX):
                name = key.removesuffix(SECRET_SUFFIX)
                setting = self.settings.get(name)
                if setting is None:
                    raise ConfigError(key, self._unknown(key), source)
                if not setting.takes_file:
                    raise ConfigError(key, f"{name} is not text, so it cannot be read from a file", source)
                if name in raw:
                    raise ConfigError(name, f"give {name} or {key}, not both", source)
                value = _read_secret(key, value, source)
                text = True
            elif key not in self.settings:
                raise ConfigError(key, self._unknown(key), source)
            out[name] = (self._convert(name, value, source, from_text=text), source)
        return out

    def _unknown(self, key: str) -> str:
        close = difflib.get_close_matches(key, list(self.settings), n=1, cutoff=0.7)
        return "unknown setting" + (f" (did you mean {close[0]!r}?)" if close else "")

    def _convert(self, name: str, value: Any, source: str, *, from_text: bool) -> Any:
        try:
            return _convert(self.settings[name].annotation, value, from_text)
        except _Mismatch as mismatch:
            raise ConfigError(name, f"expected {mismatch.expected}, got {value!r}", source) from None


class _Mismatch(Exception):
    def __init__(self, expected: str) -> None:
        self.expected = expected


def _read_secret(key: str, value: Any, source: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a file name, got {value!r}", source)
    try:
        text = Path(value).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(key, f"cannot read {value}: {error.strerror or error}", source) from None
    return text.removesuffix("\n").removesuffix("\r")


# ---- types ---------------------------------------------------------------------------------------

_SCALARS: dict[Any, str] = {str: "a string", int: "an integer", float: "a number", bool: "true or false", Path: "a path"}


def _members(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(annotation)
    return (annotation,)


def _check_supported(name: str, annotation: Any) -> None:
    for member in _members(annotation):
        origin = typing.get_origin(member)
        if member in _SCALARS or member is type(None) or origin is typing.Literal:
            continue
        if isinstance(member, type) and issubclass(member, enum.Enum):
            continue
        if origin in (list, frozenset, set, tuple) and all(a in _SCALARS or a is Ellipsis for a in typing.get_args(member)):
            continue
        if origin is dict and all(a in _SCALARS for a in typing.get_args(member)):
            continue
        raise TypeError(
            f"BrokerConfig.{name}: type {annotation} cannot come from a config file; support it in "
            "mailslot/config.py or mark the field field(metadata={'config': False})"
        )


def _accepts_text(annotation: Any) -> bool:
    return any(m is str for m in _members(annotation))


def _describe(annotation: Any) -> str:
    parts = []
    for member in _members(annotation):
        if member is type(None):
            parts.append("none")
        elif typing.get_origin(member) is typing.Literal:
            parts.append("one of " + ", ".join(repr(a) for a in typing.get_args(member)))
        elif isinstance(member, type) and issubclass(member, enum.Enum):
            parts.append("one of " + ", ".join(repr(e.value) for e in member))
        elif typing.get_origin(member) is dict:
            parts.append("a table")
        elif typing.get_origin(member) in (list, frozenset, set, tuple):
            parts.append("a list")
        else:
            parts.append(_SCALARS[member])
    return " or ".join(parts)


def _convert(annotation: Any, value: Any, from_text: bool) -> Any:
    """``value`` as ``annotation`` wants it. ``from_text``: it came from the environment or a flag, so
    numbers, booleans and lists are still text to parse. Raises :class:`_Mismatch`."""
    members = _members(annotation)
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None and type(None) in members:
        return None
    if isinstance(value, str) and type(None) in members and value.strip().lower() in NONE_WORDS and str not in members:
        return None
    # Text first where text is allowed (a size "512MB" stays text for a str | int setting).
    ordered = sorted(members, key=lambda m: 0 if m is str else 1) if from_text else members
    for member in ordered:
        if member is type(None):
            continue
        try:
            return _convert_one(member, value, from_text)
        except (_Mismatch, ValueError, TypeError):
            continue
    raise _Mismatch(_describe(annotation))


def _convert_one(member: Any, value: Any, from_text: bool) -> Any:
    text = isinstance(value, str)
    if member is bool:
        if isinstance(value, bool):
            return value
        if text and from_text and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _Mismatch("true or false")
    if member is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if text and from_text:
            return int(value.strip().replace("_", ""))
        raise _Mismatch("an integer")
    if member is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if text and from_text:
            return float(value.strip())
        raise _Mismatch("a number")
    if member is str:
        if text:
            return value
        raise _Mismatch("a string")
    if member is Path:
        if isinstance(value, Path):
            return value
        if text and value:
            return Path(value).expanduser()
        raise _Mismatch("a path")
    origin = typing.get_origin(member)
    if origin is typing.Literal:
        if value in typing.get_args(member):
            return value
        raise _Mismatch("")
    if isinstance(member, type) and issubclass(member, enum.Enum):
        return member(value)
    if origin in (list, frozenset, set, tuple):
        if text and from_text:
            value = _parse_text_collection(value, "[")
        if not isinstance(value, (list, tuple, set, frozenset)):
            raise _Mismatch("a list")
        args = [a for a in typing.get_args(member) if a is not Ellipsis]
        item_type = args[0] if args else str
        items = [_convert_one(item_type, item, from_text) for item in value]
        return origin(items)
    if origin is dict:
        if text and from_text:
            value = _parse_text_collection(value, "{")
        if not isinstance(value, dict):
            raise _Mismatch("a table")
        key_type, value_type = typing.get_args(member)
        return {_convert_one(key_type, k, from_text): _convert_one(value_type, v, from_text) for k, v in value.items()}
    raise _Mismatch(str(member))


def _parse_text_collection(text: str, opener: str) -> Any:
    """A list or table written in an environment variable or a flag: a TOML inline value
    (``["a", "b"]``, ``{guest = "guest"}``), or for a list simply ``a,b``."""
    stripped = text.strip()
    if stripped.startswith(opener):
        return tomllib.loads(f"v = {stripped}")["v"]
    if opener == "[":
        return [item.strip() for item in stripped.split(",") if item.strip()]
    raise ValueError(text)
