"""Contract checks: record every name a backend touches on a fake module, then check the real one.

A fake that drifts from the real vendor module makes tests pass while real hardware fails.  So a
backend runs against a fake wrapped in :func:`record`, and :func:`check_against` asserts that
each recorded name exists in the real module (or in names read from its sources) with a
compatible signature.

    proxy, rec = record(fake_cuda_module, wrap_results=("get_device_properties",))
    backend = MyBackend(module=proxy)
    exercise(backend)   # every per-device Backend method once
    check_against(rec, torch.cuda, namespaces={"get_device_properties()": props_names})

Recorded names are dotted and relative to the wrapped module (``memory.mem_get_info``); the
attributes of a call's result are recorded under ``<function>()`` (``get_device_properties().uuid``).
"""

from __future__ import annotations

import ast
import functools
import inspect
import os
import types
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hal.contract import Backend

__all__ = [
    "CallShape",
    "ContractError",
    "Recorder",
    "RecordingProxy",
    "check_against",
    "contract_problems",
    "exercise",
    "names_from_source",
    "record",
]


class ContractError(AssertionError):
    """A backend used a name, or a call shape, that the real vendor module does not have."""


@dataclass(frozen=True)
class CallShape:
    """How a recorded function was called: the number of positional arguments and keyword names."""

    positional: int
    keywords: tuple[str, ...] = ()


@dataclass
class Recorder:
    """What a backend touched: each dotted name, the fake object it resolved to, and the calls."""

    objects: dict[str, Any] = field(default_factory=dict)
    calls: dict[str, set[CallShape]] = field(default_factory=dict)
    missing_in_fake: set[str] = field(default_factory=set)

    @property
    def names(self) -> list[str]:
        """Every recorded name, sorted (names the fake lacked included)."""
        return sorted(set(self.objects) | self.missing_in_fake)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.objects or name in self.missing_in_fake

    def __len__(self) -> int:
        return len(self.names)


def _wrappable(value: Any) -> bool:
    """Modules and plain namespaces get proxied so that nested names are recorded too."""
    return isinstance(value, (types.ModuleType, types.SimpleNamespace)) or getattr(
        value, "__contract_namespace__", False
    )


def _is_function(value: Any) -> bool:
    return (inspect.isfunction(value) or inspect.ismethod(value) or inspect.isbuiltin(value)
            or isinstance(value, functools.partial))


class RecordingProxy:
    """Wraps a module-like object; every attribute read is recorded in a :class:`Recorder`."""

    __slots__ = ("_hal_prefix", "_hal_recorder", "_hal_target", "_hal_wrap_results")

    def __init__(self, target: Any, recorder: Recorder, prefix: str = "",
                 wrap_results: Collection[str] = ()) -> None:
        object.__setattr__(self, "_hal_target", target)
        object.__setattr__(self, "_hal_recorder", recorder)
        object.__setattr__(self, "_hal_prefix", prefix)
        object.__setattr__(self, "_hal_wrap_results", frozenset(wrap_results))

    def __getattr__(self, name: str) -> Any:
        prefix: str = object.__getattribute__(self, "_hal_prefix")
        recorder: Recorder = object.__getattribute__(self, "_hal_recorder")
        target = object.__getattribute__(self, "_hal_target")
        wrap: frozenset[str] = object.__getattribute__(self, "_hal_wrap_results")
        full = f"{prefix}{name}"
        try:
            value = getattr(target, name)
        except AttributeError:
            recorder.missing_in_fake.add(full)
            raise
        recorder.objects[full] = value
        if _wrappable(value):
            return RecordingProxy(value, recorder, f"{full}.", wrap)
        if _is_function(value):
            return _recording_call(value, full, recorder, wrap)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"backends must not set attributes on vendor modules ({name!r})")

    def __repr__(self) -> str:
        target = object.__getattribute__(self, "_hal_target")
        return f"<RecordingProxy of {target!r}>"


def _recording_call(func: Callable[..., Any], full: str, recorder: Recorder,
                    wrap: frozenset[str]) -> Callable[..., Any]:
    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        recorder.calls.setdefault(full, set()).add(CallShape(len(args), tuple(sorted(kwargs))))
        result = func(*args, **kwargs)
        if full in wrap and result is not None:
            return RecordingProxy(result, recorder, f"{full}().", wrap)
        return result

    return call


def record(target: Any, wrap_results: Collection[str] = ()) -> tuple[Any, Recorder]:
    """Wrap ``target`` in a recording proxy; returns (proxy, recorder).

    ``wrap_results``: dotted names of functions whose results are proxied too, so attributes read
    from them (device properties, say) are recorded as ``name().attr``.
    """
    recorder = Recorder()
    return RecordingProxy(target, recorder, "", wrap_results), recorder


def exercise(backend: Backend) -> None:
    """Run every Backend method that drives the device module once, on each device it reports.

    The contract is what these touch, so a recorded run of this covers the whole device surface.
    """
    backend.probe()
    backend.devices()
    for index in range(max(1, backend.probe().device_count)):
        backend.memory(index)
        backend.dtypes(index)
    backend.set_device(0)
    backend.synchronize(0)
    backend.synchronize()
    backend.empty_cache()
    backend.reset_peak_memory(0)
    backend.reset_peak_memory()


# -- reading real names from sources, without importing them ----------------------------------


_PLACEHOLDER_DEFAULT = object()


def _signature_from_ast(fn: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> inspect.Signature:
    a = fn.args
    params: list[inspect.Parameter] = []
    positional = [*a.posonlyargs, *a.args]
    defaults: list[Any] = [inspect.Parameter.empty] * (len(positional) - len(a.defaults))
    defaults += [_PLACEHOLDER_DEFAULT] * len(a.defaults)
    for i, arg in enumerate(positional):
        kind = (inspect.Parameter.POSITIONAL_ONLY if i < len(a.posonlyargs)
                else inspect.Parameter.POSITIONAL_OR_KEYWORD)
        params.append(inspect.Parameter(arg.arg, kind, default=defaults[i]))
    if a.vararg:
        params.append(inspect.Parameter(a.vararg.arg, inspect.Parameter.VAR_POSITIONAL))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        params.append(inspect.Parameter(
            arg.arg, inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if default is None else _PLACEHOLDER_DEFAULT))
    if a.kwarg:
        params.append(inspect.Parameter(a.kwarg.arg, inspect.Parameter.VAR_KEYWORD))
    is_static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)
    if method and params and not is_static:
        params = params[1:]
    return inspect.Signature(params)


def names_from_source(path: str | os.PathLike[str], class_name: str | None = None
                      ) -> dict[str, inspect.Signature | None]:
    """Top-level names (or one class's members) of a .py/.pyi file, read with ``ast``, not imported.

    Functions map to their signature; assignments, imports and classes map to None.
    """
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=os.fspath(path))
    body: list[ast.stmt] = tree.body
    if class_name is not None:
        classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name]
        if not classes:
            raise LookupError(f"class {class_name!r} not found in {os.fspath(path)}")
        body = classes[0].body
    out: dict[str, inspect.Signature | None] = {}

    def visit(stmts: list[ast.stmt]) -> None:
        for node in stmts:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.setdefault(node.name, _signature_from_ast(node, class_name is not None))
            elif isinstance(node, ast.ClassDef):
                out.setdefault(node.name, None)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                out.setdefault(node.target.id, None)
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name):
                            out.setdefault(n.id, None)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.name != "*":
                        out.setdefault((alias.asname or alias.name).split(".")[0], None)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for h in getattr(node, "handlers", []):
                    visit(h.body)

    visit(body)
    return out


# -- checking recorded names against the real module ------------------------------------------

_MISSING = object()


def _resolve(spec: Any, dotted: str) -> Any:
    """Look ``dotted`` up in a real module/object, a name->object mapping, or a set of names."""
    if isinstance(spec, Mapping):
        return spec.get(dotted, _MISSING)
    if isinstance(spec, (set, frozenset, list, tuple)):
        return None if dotted in spec else _MISSING
    value = spec
    for part in dotted.split("."):
        try:
            value = getattr(value, part)
        except Exception:
            return _MISSING
    return value


def _signature(obj: Any) -> inspect.Signature | None:
    if isinstance(obj, inspect.Signature):
        return obj
    if obj is None or inspect.isclass(obj) or not callable(obj):
        return None
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def _shape(sig: inspect.Signature) -> list[tuple[str, Any, bool]]:
    return [(p.name, p.kind, p.default is not inspect.Parameter.empty)
            for p in sig.parameters.values()]


def _fmt(sig: inspect.Signature) -> str:
    return "(" + ", ".join(
        ("*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else "")
        + p.name + ("=…" if p.default is not p.empty else "")
        for p in sig.parameters.values()) + ")"


def contract_problems(
    recorded: Recorder | Iterable[str],
    real: Any,
    *,
    namespaces: Mapping[str, Any] | None = None,
    ignore: Collection[str] = (),
) -> list[str]:
    """Each recorded name the real module lacks, or whose signature differs; empty when all agree.

    ``real``: the real module/object, a mapping of dotted name -> object or inspect.Signature
    (e.g. from :func:`names_from_source`), or a collection of names (existence only).
    ``namespaces``: prefix -> real spec for recorded call results, e.g.
    ``{"get_device_properties()": names}``.
    """
    if isinstance(recorded, Recorder):
        names = recorded.names
        fakes: Mapping[str, Any] = recorded.objects
        calls: Mapping[str, set[CallShape]] = recorded.calls
    else:
        names, fakes, calls = sorted(set(recorded)), {}, {}
    spaces = dict(namespaces or {})
    problems = []
    for name in names:
        if name in ignore:
            continue
        spec, rel = real, name
        for prefix in sorted(spaces, key=len, reverse=True):
            if name.startswith(prefix + "."):
                spec, rel = spaces[prefix], name[len(prefix) + 1:]
                break
        else:
            if "()." in name:
                head = name.split("().", 1)[0] + "()"
                problems.append(f"{name}: no real namespace given for results of {head}")
                continue
        real_obj = _resolve(spec, rel)
        if real_obj is _MISSING:
            problems.append(f"{name}: not in the real module")
            continue
        fake_obj = fakes.get(name, _MISSING)
        real_sig = _signature(real_obj)
        fake_sig = None if fake_obj is _MISSING else _signature(fake_obj)
        if real_sig is None or fake_sig is None:
            continue
        if _shape(fake_sig) != _shape(real_sig):
            problems.append(f"{name}: fake signature {_fmt(fake_sig)} differs from the real "
                            f"{_fmt(real_sig)}")
        for shape in sorted(calls.get(name, ()), key=lambda s: (s.positional, s.keywords)):
            try:
                real_sig.bind(*([None] * shape.positional), **dict.fromkeys(shape.keywords))
            except TypeError as exc:
                kw = f" and keywords {', '.join(shape.keywords)}" if shape.keywords else ""
                problems.append(f"{name}: called with {shape.positional} positional argument(s)"
                                f"{kw}, which the real {_fmt(real_sig)} rejects ({exc})")
    return problems


def check_against(
    recorded: Recorder | Iterable[str],
    real: Any,
    *,
    namespaces: Mapping[str, Any] | None = None,
    ignore: Collection[str] = (),
) -> None:
    """Raise :class:`ContractError` listing every problem :func:`contract_problems` finds."""
    problems = contract_problems(recorded, real, namespaces=namespaces, ignore=ignore)
    if problems:
        label = getattr(real, "__name__", type(real).__name__)
        raise ContractError(f"{len(problems)} contract problem(s) against {label}:\n  "
                            + "\n  ".join(problems))
