"""Name -> factory registries, keyed by the strings used in params.yaml.

A registry is a plain dict filled by a decorator at import time, so adding a dataset kind or a model is one
registered function or class, and an unknown name produces an error that lists every valid choice.
"""

from collections.abc import Callable
from typing import Generic, TypeVar

from pipeline.errors import ParamsError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (functions or classes); `what` names the kind of thing in error messages."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.what} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str, where: str = "") -> T:
        try:
            return self._entries[name]
        except KeyError:
            place = f" in params.yaml: {where}" if where else ""
            raise ParamsError(
                f"unknown {self.what} '{name}'{place}; choose from: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
