"""Configurations with presets and overrides, shared by every protocol (free of torch).

A protocol's config is a dataclass (every number, one source of truth, with presets) mixing
in :class:`MethodConfig`. Settings are given as ``key=value`` (``--set``): a global field of
the config, or ``METHOD.key=value`` for one method only, either a per-method field of the
protocol (such as ``inner_steps``) or a field of the method's options dataclass (such as
``leap.metric``). The methods a protocol runs come from the registry
(:mod:`metaleap.methods`), filtered by the protocol's name and the kinds it runs.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import math
import textwrap
import typing
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from metaleap import methods

C = TypeVar("C")


class ConfigError(ValueError):
    """A configuration that cannot run; raised before any work is done."""


def parse_value(text: str, like: Any, key: str) -> Any:
    """``text`` as the type of ``like`` (bool, int, float, str or a comma-separated list)."""
    try:
        if isinstance(like, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(like, list):
            items = [t for t in text.split(",") if t]
            return [parse_value(t, like[0], key) for t in items] if like else items
        return type(like)(text)
    except ValueError:
        raise ConfigError(f"--set {key}={text}: expected {type(like).__name__}") from None


def field_docs(cls: type) -> dict[str, str]:
    """Each dataclass field's docstring (the string literal under it), bases included."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, after in itertools.pairwise(body):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def describe_settings(cfg: Any) -> str:
    """Every setting of ``cfg``, ``key = value  # doc``: the global fields, then for each of
    its methods the per-method protocol fields and the method's options (``METHOD.key``)."""
    docs = field_docs(type(cfg))
    lines = [f"{f.name} = {getattr(cfg, f.name)!r}  # {docs.get(f.name, '')}"
             for f in dataclasses.fields(cfg) if f.name != "per_method"]
    for method in cfg.methods:
        options = cfg.options(method)
        option_docs = field_docs(type(options))
        lines += ["", f"# {methods.label(method)}"]
        lines += [f"{method}.{k} = {getattr(cfg.for_method(method), k)!r}"
                  for k in cfg.PER_METHOD]
        lines += [f"{method}.{f.name} = {getattr(options, f.name)!r}  # "
                  f"{option_docs.get(f.name, '')}" for f in dataclasses.fields(options)]
    return "\n".join(lines)


class MethodConfig:
    """Mixin for protocol configs with ``methods`` and sparse ``per_method`` settings.

    A subclass names its protocol (``PROTOCOL``, as registered; ``TITLE`` in messages) and
    the method kinds it runs (``KINDS``), and lists in ``PER_METHOD`` the protocol fields a
    method may override; every other ``METHOD.key`` must be a field of that method's options.
    """

    PROTOCOL: ClassVar[str]
    TITLE: ClassVar[str]
    KINDS: ClassVar[frozenset[str]] = frozenset({methods.META_BATCH})
    PER_METHOD: ClassVar[tuple[str, ...]] = ()
    methods: list[str]
    per_method: dict[str, dict[str, Any]]

    @classmethod
    def supported(cls) -> list[str]:
        """The registered methods this protocol runs, in registry order."""
        return methods.runs_in(cls.PROTOCOL, cls.KINDS)

    def check_methods(self) -> None:
        """Every method is registered, runs in this protocol and appears once."""
        unknown = [m for m in self.methods if m not in methods.METHODS]
        if unknown:
            raise ConfigError(f"unknown method(s) {unknown}; choose from "
                              f"{', '.join(methods.METHODS)}")
        supported = self.supported()
        refused = [m for m in self.methods if m not in supported]
        if refused:
            notes = "; ".join(methods.get(m).note for m in refused if methods.get(m).note)
            raise ConfigError(f"the {self.TITLE} protocol runs {', '.join(supported)}; not "
                              f"{refused}" + (f" ({notes})" if notes else ""))
        if not self.methods or len(set(self.methods)) < len(self.methods):
            raise ConfigError("methods must be non-empty and must not repeat")

    def check_each_method(self, check: Callable[[Any], None]) -> None:
        """``check`` on each method's config (``for_method``) and its options, a
        ``ConfigError`` prefixed with the method's name."""
        for method in self.methods:
            try:
                check(self.for_method(method))
            except ConfigError as e:
                raise ConfigError(f"{method}: {e}") from None
            self.options(method)

    def for_method(self: C, method: str) -> C:
        """This config with ``method``'s protocol-field overrides applied."""
        over = self.per_method.get(method, {})  # type: ignore[attr-defined]
        return dataclasses.replace(self, **{k: v for k, v in over.items()  # type: ignore
                                            if k in self.PER_METHOD})  # type: ignore

    def options(self, method: str) -> Any:
        """``method``'s options dataclass, with the overrides, checked."""
        over = {k: v for k, v in self.per_method.get(method, {}).items()
                if k not in self.PER_METHOD}
        try:
            return methods.make_options(method, **over)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{method}: {e}") from None

    def resolved_methods(self) -> dict[str, dict[str, Any]]:
        """Every method's full settings: its protocol fields and its options."""
        return {m: {**{k: getattr(self.for_method(m), k) for k in self.PER_METHOD},
                    **dataclasses.asdict(self.options(m))} for m in self.methods}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


def _example(cfg: Any, key: str) -> Any:
    """A value of field ``key``'s type: its value, or for an empty list one item of the
    annotated type (``list[int]`` gives ``[0]``)."""
    value = getattr(cfg, key)
    if isinstance(value, list) and not value:
        args = typing.get_args(typing.get_type_hints(type(cfg))[key])
        return [args[0]()] if args else value
    return value


def apply_overrides(cfg: C, overrides: Sequence[str]) -> C:
    """``cfg`` with ``key=value`` and ``METHOD.key=value`` overrides applied (parsed, not
    checked: see the config's ``check``)."""
    names = {f.name for f in dataclasses.fields(cfg)} - {"per_method"}  # type: ignore[arg-type]
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        method, dot, sub = key.partition(".")
        if dot:
            if method not in methods.METHODS:
                raise ConfigError(f"--set {key}: unknown method {method!r}")
            options = dataclasses.asdict(methods.get(method).options())
            per_method = cfg.PER_METHOD  # type: ignore[attr-defined]
            if sub in per_method:
                like = getattr(cfg, sub)
            elif sub in options:
                like = options[sub]
            else:
                raise ConfigError(
                    f"--set {key}: a method may override {', '.join(per_method)} or its "
                    f"options ({', '.join(options) or 'none'})")
            per = {m: dict(v) for m, v in cfg.per_method.items()}  # type: ignore[attr-defined]
            per.setdefault(method, {})[sub] = parse_value(text, like, key)
            cfg = dataclasses.replace(cfg, per_method=per)  # type: ignore[type-var]
        elif key in names:
            cfg = dataclasses.replace(  # type: ignore[type-var]
                cfg, **{key: parse_value(text, _example(cfg, key), key)})
        else:
            raise ConfigError(f"--set {key}: unknown key; known: {', '.join(sorted(names))}")
    return cfg


def resolve_preset(config: Callable[..., C], presets: dict[str, dict[str, Any]], preset: str,
                   overrides: Sequence[str] = (), **fields: Any) -> C:
    """``presets[preset]``, then ``fields``, then ``key=value`` overrides (``method.key=value``
    for one method), checked by the config's ``check()``."""
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(presets)}")
    cfg = dataclasses.replace(config(**presets[preset]), **fields)  # type: ignore[type-var]
    cfg = apply_overrides(cfg, overrides)
    cfg.check()  # type: ignore[attr-defined]
    return cfg


# ---------------------------------------------------------------- value checks
def at_least(cfg: Any, low: int, *names: str) -> None:
    """Each named integer field is at least ``low``."""
    for name in names:
        if getattr(cfg, name) < low:
            raise ConfigError(f"{name} must be at least {low}, got {getattr(cfg, name)}")


def positive(cfg: Any, *names: str) -> None:
    """Each named float field is a finite positive number."""
    for name in names:
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a positive number, got {value}")
