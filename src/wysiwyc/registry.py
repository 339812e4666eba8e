"""Registry: name -> object, the one way the package makes things choosable by name.

Classifiers, attribution heads, attribution methods, datasets, Explainer architectures,
mask-predictor controllers, runtime backends and frame sources are each a :class:`Registry`.
Entries are registered where they are defined, with the decorator::

    CLASSIFIERS = Registry("classifier arch")

    @CLASSIFIERS.register("small_cnn")
    def small_cnn(num_classes: int) -> BlockClassifier: ...

    CLASSIFIERS.lookup("small_cnn")  # the entry, or a UserError naming the choices

A registry whose entries live in modules that should not be imported up front (they pull
in heavy or optional dependencies) names those modules as ``plugins``; they are imported
on the first lookup, and a plugin whose own module is missing is skipped.

Stdlib-only: the torch-free runtime uses it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeVar

from .errors import UserError

T = TypeVar("T")


class Registry(Mapping[str, T]):
    """A read-mostly mapping name -> entry, filled by :meth:`register`.

    Args:
        kind: what the entries are, for messages (``unknown <kind> 'x'; choose from ...``).
        plugins: modules that register entries, imported on the first lookup.
    """

    def __init__(self, kind: str, plugins: Sequence[str] = ()) -> None:
        self.kind = kind
        self._plugins = list(plugins)
        self._entries: dict[str, T] = {}

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator registering its target under each of ``names`` (a later registration of
        a name replaces the earlier one)."""
        if not names:
            raise TypeError("register() needs at least one name")

        def deco(obj: T) -> T:
            for name in names:
                self._entries[name] = obj
            return obj

        return deco

    def __setitem__(self, name: str, obj: T) -> None:
        self._entries[name] = obj

    def lookup(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises:
            UserError: no such entry; the message lists the registered names.
        """
        if name not in self:
            raise UserError(f"unknown {self.kind} {name!r}; choose from {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self)

    # -- Mapping ---------------------------------------------------------------------
    def __getitem__(self, name: str) -> T:
        self._load_plugins()
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load_plugins()
        return iter(list(self._entries))  # registration order

    def __len__(self) -> int:
        self._load_plugins()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"

    def _load_plugins(self) -> None:
        while self._plugins:
            module = self._plugins.pop(0)
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:  # a real import error inside an existing module
                    self._plugins.insert(0, module)
                    raise
