"""The declaration machinery: one :func:`key` per configuration key, written as a dataclass field.

A section of the file is a frozen dataclass (:mod:`.model`); each of its keys is one field::

    max_ttl: float = key(Duration(), "1h", "ceiling for long TTLs", check=at_most(7 * 86400))

That one line states the key's name (the field's), its type (the annotation, and the
:class:`~.kinds.Kind` that reads it), its default as written in the file (read through the kind
to give the field's default), its checks and its one-line doc.  Everything else is derived from
the fields: the loader (:mod:`.load`), the schema of known keys and the unknown-key suggestions,
:meth:`Config.to_dict` (:func:`effective`), and the README reference (:mod:`.reference`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar, cast

from ..errors import ConfigError
from .checks import Check
from .kinds import Kind, Sibling

#: A section's cross-key checks (its ``CHECKS`` class attribute).
Checks = tuple[Callable[[Any], None], ...]

T = TypeVar("T")

_KEY, _SECTION = "nettrust.config.key", "nettrust.config.section"


@dataclass(frozen=True)
class Key(Generic[T]):
    """One declared key.  ``default`` is in file form ("30s"); ``value`` is it read (30.0)."""

    kind: Kind[T]
    default: Any
    doc: str
    checks: tuple[Check[T], ...]
    unit: str
    value: T
    name: str = ""

    def read(self, written: Any, sibling: Sibling) -> T:
        """The value written in the file, converted and checked (raises ``Invalid``)."""
        value = self.kind.read(written, sibling)
        if value is not None:
            for check in self.checks:
                check(value)
        return value

    def describe(self) -> str:
        """Type, checks and unit, for the reference: "duration, ≥ 1s"."""
        return ", ".join([self.kind.describe(), *(c.rule for c in self.checks),
                          *([self.unit] if self.unit else [])])


def key(kind: Kind[T], default: Any, doc: str, *,
        check: Check[T] | tuple[Check[T], ...] = (), unit: str = "") -> T:
    """Declare a key as a dataclass field (see the module docstring).

    ``default`` is written as in the file; it is read and checked here, so a bad declaration
    fails at import.  ``unit`` is shown in the reference ("per second").
    """
    checks = check if isinstance(check, tuple) else (check,)
    declared = Key(kind, default, doc, checks, unit, cast(T, None))
    value = declared.read(default, _no_sibling)
    declared = dataclasses.replace(declared, value=value)
    # dataclasses.field() is typed as the value it defaults to: the annotation checks it.
    return dataclasses.field(default=value, metadata={_KEY: declared})


def section(cls: Callable[[], T]) -> T:
    """Declare a section of the file as a field of the root configuration (named as the field)."""
    return dataclasses.field(default_factory=cls, metadata={_SECTION: cls})


def _no_sibling(name: str) -> Any:
    raise ConfigError(f"a declared default cannot depend on another key ({name})")


@dataclass(frozen=True)
class Section:
    """A section of the file: its name, the dataclass holding it, its keys and cross-key checks.

    ``attr`` is the root's attribute holding it; None for the root's own keys ([general]).
    """

    name: str
    cls: type
    keys: tuple[Key[Any], ...]
    checks: tuple[Callable[[Any], None], ...]
    attr: str | None

    def key(self, name: str) -> Key[Any]:
        return next(k for k in self.keys if k.name == name)


def keys_of(cls: type) -> tuple[Key[Any], ...]:
    """The keys declared on ``cls``, in declaration order, named after their fields."""
    return tuple(dataclasses.replace(f.metadata[_KEY], name=f.name)
                 for f in dataclasses.fields(cls) if _KEY in f.metadata)


def sections_of(root: type, root_section: str) -> tuple[Section, ...]:
    """Every section of the file: the root's own keys as ``root_section``, then each field
    declared with :func:`section`, in order."""
    out = [Section(root_section, root, keys_of(root), getattr(root, "CHECKS", ()), None)]
    for f in dataclasses.fields(root):
        if _SECTION in f.metadata:
            cls = f.metadata[_SECTION]
            out.append(Section(f.name, cls, keys_of(cls), getattr(cls, "CHECKS", ()), f.name))
    return tuple(out)


def effective(config: Any, sections: tuple[Section, ...]) -> dict[str, dict[str, Any]]:
    """``config`` shaped like the file, in file form: every section, every key."""
    out = {}
    for spec in sections:
        holder = config if spec.attr is None else getattr(config, spec.attr)
        out[spec.name] = {k.name: k.kind.dump(getattr(holder, k.name)) for k in spec.keys}
    return out
