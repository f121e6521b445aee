"""A tiny explicit registry: name -> factory, with errors that list the valid names."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """An explicit, ordered mapping from names to factories.

    ``registry[name]`` raises :class:`UnknownNameError` listing every valid name when ``name`` is unknown.
    """

    def __init__(self, kind: str, entries: dict[str, T] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = dict(entries or {})

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]


def check_options(kind: str, name: str, given: dict, valid: set[str] | list[str]) -> None:
    """Raise :class:`UnknownNameError` if ``given`` has keys outside ``valid``, listing the valid ones."""
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise UnknownNameError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for {kind} {name!r}; "
            f"valid options: {', '.join(sorted(valid)) or '(none)'}"
        )


__all__ = ["Registry", "check_options", "Callable"]
