"""Scenario files (issue 4, §3): one TOML file names a machine, its devices, the policies to
compare with their knobs, cost overrides, the workloads, the duration and the seed.

A scenario is data first: :func:`parse_scenario` turns a parsed TOML document into a frozen
:class:`ScenarioSpec` holding the very objects the simulator takes (``MachineSpec``,
``DeviceSpec``, workload dataclasses), so a file is checked completely before anything runs,
and every mistake is reported as a :class:`ScenarioError` naming the file, the key path
(``workload[2] (fio 'j3').iodepth``) and what was expected. Workload tables are read by
introspecting the dataclass fields of :data:`swiotlb.workloads.WORKLOADS`, so a new workload
kind needs no change here. The built-in scenarios (``scenarios/S*.toml`` in this package) come
from ``../shared/scenarios.md`` §8; docs/scenarios.md describes the format.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from swiotlb.core.sizing import parse_cmdline
from swiotlb.sim.costs import CostModel
from swiotlb.sim.spec import DeviceSpec, MachineSpec
from swiotlb.workloads.units import format_duration, parse_bandwidth, parse_bytes, parse_duration

BUILTIN_PACKAGE = "swiotlb.workloads"
BUILTIN_DIR = "scenarios"
_BUILTIN_FILE = re.compile(r"(S\d+)-([a-z0-9][a-z0-9-]*)\.toml")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
TOP_KEYS = ("id", "name", "title", "checks", "duration", "duration_ns", "seed", "policies",
            "machine", "device", "policy", "costs", "workload")
SIZE_FIELDS = frozenset({"ram", "page_size", "bs", "size", "rx_buf", "tx_frame", "bus_dma_limit", "max_bytes_per_step",
                         "region_start"})
"""Integer fields that also accept size strings ("4K"); so does every ``*_bytes`` field."""


class ScenarioError(ValueError):
    """A scenario that cannot be read: the message names the file, the key path and the need."""

    def __init__(self, source: str, key: str, expected: str) -> None:
        self.source = source
        self.key = key
        self.expected = expected
        super().__init__(f"{source}: {key}: {expected}" if key else f"{source}: {expected}")


class Workload(Protocol):
    """What the scenario needs of a workload object (the contract's generators provide more)."""

    @property
    def name(self) -> str: ...

    def start(self, sim: Any) -> None: ...


@dataclasses.dataclass(frozen=True)
class ScenarioSpec:
    """A complete, validated scenario; ``source`` is the file path or ``builtin:S<n>``."""

    id: str | None
    name: str
    title: str
    checks: str
    machine: MachineSpec
    devices: tuple[DeviceSpec, ...]
    workloads: tuple[Workload, ...]
    duration_ns: int
    seed: int
    policies: tuple[str, ...]
    policy_options: Mapping[str, Mapping[str, Any]]
    costs: Mapping[str, int]
    source: str

    @property
    def ref(self) -> str:
        """How to name it on a command line: the id when it has one, else the name."""
        return self.id or self.name

    def with_overrides(self, duration_ns: int | None = None, seed: int | None = None) -> ScenarioSpec:
        """A copy with another duration or seed (the command line's ``--duration``/``--seed``)."""
        changes: dict[str, Any] = {}
        if duration_ns is not None:
            if not _is_int(duration_ns) or duration_ns <= 0:
                raise ScenarioError(self.source, "duration", f"expected a positive duration, got {duration_ns!r}")
            changes["duration_ns"] = duration_ns
        if seed is not None:
            if not _is_int(seed) or seed < 0:
                raise ScenarioError(self.source, "seed", f"expected an integer >= 0, got {seed!r}")
            changes["seed"] = seed
        return dataclasses.replace(self, **changes)


# ------------------------------------------------------------------------------------------
# Value conversion


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _got(value: object) -> str:
    return f"got {value!r}"


def _to_int(value: object) -> int:
    if not _is_int(value):
        raise ValueError(f"expected an integer, {_got(value)}")
    assert isinstance(value, int)
    return value


def _to_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, {_got(value)}")
    return float(value)


def _to_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, {_got(value)}")
    return value


def _to_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, {_got(value)}")
    return value


def _to_mask(value: object) -> int:
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            pass
    if not _is_int(value):
        raise ValueError(f"expected an integer mask such as 0xFFF, {_got(value)}")
    assert isinstance(value, int)
    return value


Conv = Callable[[object], Any]
_SCALARS: dict[str, Conv] = {
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "str": _to_str,
    "duration": parse_duration,
    "size": parse_bytes,
    "bandwidth": parse_bandwidth,
    "mask": _to_mask,
}
_PAIR_FIELDS: dict[str, tuple[str, str]] = {
    "bs": ("size", "int"),  # SizeMix: (size_bytes, weight)
    "size": ("size", "int"),
    "cma": ("size", "size"),  # (start, size)
    "ramp": ("duration", "size"),  # (t_ns, bytes)
    "order_mix": ("int", "float"),  # (order, weight)
}
_EXPECT = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "duration": 'a duration ("10ms", "1.5s") or integer nanoseconds',
    "size": 'a size in bytes (4096, "4K", "64M")',
    "bandwidth": 'bytes per second ("4G", "400M")',
    "mask": "an integer mask (0xFFF)",
}


@dataclasses.dataclass(frozen=True)
class _Field:
    """How one dataclass field is written in a file: its keys and the converter."""

    name: str
    keys: tuple[str, ...]  # accepted spellings: ("latency", "latency_ns") or ("iodepth",)
    kind: str  # a key of _SCALARS, or "pairs"
    optional: bool  # int | None: may be omitted to mean None
    required: bool
    pair: tuple[str, str] = ("int", "float")
    single_size_ok: bool = False  # a SizeMix may be written as one size

    def expected(self) -> str:
        if self.kind == "pairs":
            first, second = (_EXPECT[k] for k in self.pair)
            text = f"a list of [{first.split(' (')[0]}, {second.split(' (')[0]}] pairs"
            return f"one size or {text}" if self.single_size_ok else text
        return _EXPECT[self.kind]


def _type_text(tp: object) -> str:
    """A canonical spelling of an annotation: int, float, bool, str, int?, pairs or other."""
    if isinstance(tp, str):
        t = tp.replace(" ", "")
        if t in ("int", "float", "bool", "str"):
            return t
        if t in ("int|None", "None|int", "Optional[int]", "typing.Optional[int]"):
            return "int?"
        if t.startswith("tuple[tuple[") or t.startswith("Tuple[Tuple[") or t == "SizeMix":
            return "pairs"
        return "other"
    if tp in (int, float, bool, str):
        return typing.cast(type, tp).__name__
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and set(args) == {int, type(None)}:
        return "int?"
    if origin is tuple and args and typing.get_origin(args[0]) is tuple:
        return "pairs"
    return "other"


def _pair_kinds_of(tp: object) -> tuple[str, str]:
    if not isinstance(tp, str):
        inner = typing.get_args(typing.get_args(tp)[0]) if typing.get_args(tp) else ()
        if len(inner) == 2 and all(t in (int, float) for t in inner):
            return (typing.cast(type, inner[0]).__name__, typing.cast(type, inner[1]).__name__)
    return ("int", "float")


@functools.lru_cache(maxsize=None)
def _fields_of(cls: type) -> tuple[_Field, ...]:
    """The file-level description of every init field of dataclass ``cls``."""
    try:
        hints: dict[str, Any] = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - annotations naming TYPE_CHECKING-only types: fall back to text
        hints = {}
    names = {f.name for f in dataclasses.fields(cls)}
    out: list[_Field] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints.get(f.name, f.type)
        text = _type_text(tp)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        optional = text == "int?"
        keys: tuple[str, ...] = (f.name,)
        pair = ("int", "float")
        single = False
        if text == "pairs":
            kind = "pairs"
            pair = _PAIR_FIELDS.get(f.name, _pair_kinds_of(tp))
            single = f.name in ("bs", "size")
        elif text in ("int", "int?"):
            if f.name.endswith("_ns"):
                kind = "duration"
                short = f.name[: -len("_ns")]
                if short not in names:
                    keys = (short, f.name)
            elif f.name == "bandwidth":
                kind = "bandwidth"
            elif f.name in SIZE_FIELDS or f.name.endswith("_bytes"):
                kind = "size"
            elif f.name.endswith("_mask"):
                kind = "mask"
            else:
                kind = "int"
        elif text in ("float", "bool", "str"):
            kind = text
        else:
            kind = "any"
        out.append(_Field(f.name, keys, kind, optional, required, pair, single))
    return tuple(out)


def _convert(field: _Field, value: object) -> Any:
    """The field's value from the file's ``value``; ValueError says what was expected."""
    if field.kind == "any":
        return value
    if field.kind != "pairs":
        try:
            return _SCALARS[field.kind](value)
        except ValueError as exc:
            msg = str(exc)
            if msg.startswith("expected"):
                raise ValueError(f"expected {field.expected()}, {_got(value)}") from None
            raise
    if field.single_size_ok and (isinstance(value, str) or _is_int(value)):
        return ((parse_bytes(value), 1),)
    if not isinstance(value, list):
        raise ValueError(f"expected {field.expected()}, {_got(value)}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, list) or len(item) != 2:
            raise _Indexed(f"[{i}]", f"expected a pair [{_EXPECT[field.pair[0]].split(' (')[0]}, "
                                     f"{_EXPECT[field.pair[1]].split(' (')[0]}], {_got(item)}")
        pair = []
        for j, (kind, part) in enumerate(zip(field.pair, item)):
            try:
                pair.append(_SCALARS[kind](part))
            except ValueError as exc:
                msg = str(exc)
                if msg.startswith("expected"):
                    msg = f"expected {_EXPECT[kind]}, {_got(part)}"
                raise _Indexed(f"[{i}][{j}]", msg) from None
        out.append(tuple(pair))
    return tuple(out)


class _Indexed(ValueError):
    """A conversion error inside a list: ``suffix`` extends the key path (``[1][0]``)."""

    def __init__(self, suffix: str, message: str) -> None:
        self.suffix = suffix
        super().__init__(message)


def _table_kwargs(cls: type, table: Mapping[str, Any], source: str, where: str,
                  skip: tuple[str, ...] = (), spelled: dict[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for dataclass ``cls`` from a TOML table, every key checked."""
    specs = [f for f in _fields_of(cls) if f.name not in skip]
    by_key = {k: f for f in specs for k in f.keys}
    kwargs: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, value in table.items():
        if key in skip:
            continue
        field = by_key.get(key)
        if field is None:
            valid = ", ".join(" or ".join(f.keys) for f in specs)
            raise ScenarioError(source, f"{where}.{key}", f"unknown key; valid keys: {valid}")
        if field.name in seen:
            raise ScenarioError(source, f"{where}.{key}",
                                f"{field.name!r} is already given as {seen[field.name]!r}; give one of them")
        seen[field.name] = key
        if spelled is not None:
            spelled[field.name] = key
        try:
            kwargs[field.name] = _convert(field, value)
        except _Indexed as exc:
            raise ScenarioError(source, f"{where}.{key}{exc.suffix}", str(exc)) from None
        except ValueError as exc:
            raise ScenarioError(source, f"{where}.{key}", str(exc)) from None
    for field in specs:
        if field.required and field.name not in kwargs:
            raise ScenarioError(source, f"{where}.{field.keys[0]}", f"missing; expected {field.expected()}")
    return kwargs


def _blame(message: str, names: Mapping[str, str]) -> str | None:
    """The field a validation message is about (``"iodepth = 0"``, ``"iodepth must be"``), as
    the file spells it; None when the message names none (the table is blamed instead)."""
    best: tuple[int, str] | None = None
    for field, key in names.items():
        m = re.search(rf"(?<!\w){re.escape(field)}\s*(?:=|:|must\b|is\b)", message)
        if m is not None and (best is None or m.start() < best[0]):
            best = (m.start(), key)
    return best[1] if best else None


def _build(cls: type, kwargs: dict[str, Any], source: str, where: str,
           spelled: Mapping[str, str] | None = None) -> Any:
    """``cls(**kwargs)``, its own validation errors reported with the file and the key."""
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        names = dict(spelled or {})
        for f in dataclasses.fields(cls):
            names.setdefault(f.name, f.name)
        key = _blame(str(exc), names)
        raise ScenarioError(source, f"{where}.{key}" if key else where, str(exc)) from None


# ------------------------------------------------------------------------------------------
# Parsing a document


def _registry() -> Mapping[str, type]:
    """The workload kinds; imported late so that this module loads before the generators."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    return typing.cast(Mapping[str, type], package.WORKLOADS)


def _policy_registry() -> Mapping[str, type]:
    from swiotlb.policies import POLICIES

    return POLICIES


def _table(doc: Mapping[str, Any], key: str, source: str, where: str | None = None) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ScenarioError(source, where or key, f"expected a table ([{where or key}]), {_got(value)}")
    return value


def _array_of_tables(doc: Mapping[str, Any], key: str, source: str) -> list[dict[str, Any]]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ScenarioError(source, key, f"expected an array of tables ([[{key}]] sections), {_got(value)}")
    return value


def _scalar(doc: Mapping[str, Any], key: str, conv: Conv, source: str, default: Any = dataclasses.MISSING) -> Any:
    if key not in doc:
        if default is dataclasses.MISSING:
            raise ScenarioError(source, key, "missing")
        return default
    try:
        return conv(doc[key])
    except ValueError as exc:
        raise ScenarioError(source, key, str(exc)) from None


def _parse_machine(doc: Mapping[str, Any], source: str) -> MachineSpec:
    if "machine" not in doc:
        raise ScenarioError(source, "machine", "missing; expected a [machine] table (ram, cpus, ...)")
    table = _table(doc, "machine", source)
    spelled: dict[str, str] = {}
    kwargs = _table_kwargs(MachineSpec, table, source, "machine", spelled=spelled)
    machine: MachineSpec = _build(MachineSpec, kwargs, source, "machine", spelled)
    try:
        parse_cmdline(machine.cmdline)
    except ValueError as exc:
        raise ScenarioError(source, "machine.cmdline", str(exc)) from None
    return machine


def _parse_devices(doc: Mapping[str, Any], source: str) -> tuple[DeviceSpec, ...]:
    devices: list[DeviceSpec] = []
    for i, table in enumerate(_array_of_tables(doc, "device", source)):
        name = table.get("name")
        where = f"device[{i}] ({name!r})" if isinstance(name, str) else f"device[{i}]"
        spelled: dict[str, str] = {}
        kwargs = _table_kwargs(DeviceSpec, table, source, where, spelled=spelled)
        dev: DeviceSpec = _build(DeviceSpec, kwargs, source, where, spelled)
        if any(d.name == dev.name for d in devices):
            raise ScenarioError(source, f"{where}.name", f"device name {dev.name!r} is used twice; names must be unique")
        devices.append(dev)
    return tuple(devices)


def _knob_value(key: str, value: object, like: object) -> Any:
    """A knob's value: durations for ``*_ns`` knobs, size strings for ``*_bytes``/``*_start``,
    else the type of the knob's default (None defaults are integers in every policy)."""
    if isinstance(value, str) and key.endswith("_ns"):
        return parse_duration(value)
    if isinstance(value, str) and key.endswith(("_bytes", "_start")):
        return parse_bytes(value)
    if isinstance(like, bool):
        return _to_bool(value)
    if isinstance(like, float):
        return _to_float(value)
    if isinstance(like, int) or like is None:
        if key.endswith("_ns"):
            return parse_duration(value)
        if key.endswith(("_bytes", "_start")):
            return parse_bytes(value)
        return _to_int(value)
    return value


def _parse_policies(doc: Mapping[str, Any], source: str,
                    cmdline: str) -> tuple[tuple[str, ...], dict[str, Mapping[str, Any]]]:
    from swiotlb.policies.config import BounceConfig, ConfigError, knob_defaults

    registry = _policy_registry()
    known = ", ".join(registry)
    if "policies" in doc:
        raw = doc["policies"]
        if not isinstance(raw, list) or not raw or not all(isinstance(p, str) for p in raw):
            raise ScenarioError(source, "policies", f"expected a non-empty list of policy names ({known}), {_got(raw)}")
        for i, name in enumerate(raw):
            if name not in registry:
                raise ScenarioError(source, f"policies[{i}]", f"unknown policy {name!r}; known policies: {known}")
            if raw.index(name) != i:
                raise ScenarioError(source, f"policies[{i}]", f"policy {name!r} is listed twice")
        policies = tuple(raw)
    else:
        policies = tuple(registry)
    options: dict[str, Mapping[str, Any]] = {}
    for pname, knobs in _table(doc, "policy", source).items():
        where = f"policy.{pname}"
        if pname not in registry:
            raise ScenarioError(source, where, f"unknown policy {pname!r}; known policies: {known}")
        if not isinstance(knobs, dict):
            raise ScenarioError(source, where, f"expected a table of knobs ([{where}]), {_got(knobs)}")
        defaults = knob_defaults(registry[pname])
        opts: dict[str, Any] = {}
        spelled_knobs: dict[str, str] = {}
        for key, value in knobs.items():
            name = key if key in defaults else f"{key}_ns" if f"{key}_ns" in defaults else None
            if name is None:
                allowed = ", ".join(defaults) or "none"
                raise ScenarioError(source, f"{where}.{key}", f"policy {pname!r} has no such knob; knobs: {allowed}")
            if name in opts:
                raise ScenarioError(source, f"{where}.{key}", f"knob {name!r} is given twice; give one spelling")
            spelled_knobs[name] = key
            try:
                opts[name] = _knob_value(name, value, defaults[name])
            except ValueError as exc:
                raise ScenarioError(source, f"{where}.{key}", str(exc)) from None
        if pname == "adaptive":
            from swiotlb.policies.adaptive import AdaptiveKnobs

            _build(AdaptiveKnobs, opts, source, where, spelled_knobs)
        try:
            BounceConfig(pname, opts).validate(cmdline)
        except ConfigError as exc:
            raise ScenarioError(source, where, str(exc)) from None
        options[pname] = types.MappingProxyType(opts)
    for i, pname in enumerate(policies):
        if pname not in options:
            try:
                BounceConfig(pname, {}).validate(cmdline)
            except ConfigError as exc:
                raise ScenarioError(source, f"policies[{i}]", str(exc)) from None
    return policies, options


def _parse_costs(doc: Mapping[str, Any], source: str) -> dict[str, int]:
    """``[costs]`` overrides, each checked by ``CostModel.from_mapping`` under its own key;
    ``x = "20us"`` stands for the field ``x_ns``."""
    table = _table(doc, "costs", source)
    values: dict[str, int] = {}
    known = CostModel.field_names()
    for key, value in table.items():
        name = f"{key}_ns" if key not in known and f"{key}_ns" in known else key
        if name in values:
            raise ScenarioError(source, f"costs.{key}", f"{name!r} is given twice; give one spelling")
        try:
            if isinstance(value, str) and name.endswith("_ns"):
                value = parse_duration(value)
            CostModel.from_mapping({name: value}, where=f"costs.{key}")
        except ValueError as exc:
            raise ScenarioError(source, f"costs.{key}", str(exc).removeprefix(f"costs.{key}: ")) from None
        values[name] = typing.cast(int, value)
    return values


def _parse_workloads(doc: Mapping[str, Any], source: str, devices: tuple[DeviceSpec, ...],
                     duration_ns: int) -> tuple[Workload, ...]:
    tables = _array_of_tables(doc, "workload", source)
    if not tables:
        return ()
    registry = _registry()
    kinds = ", ".join(registry)
    device_names = [d.name for d in devices]
    out: list[Workload] = []
    for i, table in enumerate(tables):
        kind = table.get("kind")
        if kind is None:
            raise ScenarioError(source, f"workload[{i}].kind", f"missing; expected one of {kinds}")
        if not isinstance(kind, str) or kind not in registry:
            raise ScenarioError(source, f"workload[{i}].kind", f"unknown workload kind {kind!r}; known kinds: {kinds}")
        name = table.get("name")
        where = f"workload[{i}] ({kind} {name!r})" if isinstance(name, str) else f"workload[{i}] ({kind})"
        cls = registry[kind]
        spelled: dict[str, str] = {}
        kwargs = _table_kwargs(cls, table, source, where, skip=("kind",), spelled=spelled)
        if "device" in kwargs and kwargs["device"] not in device_names:
            raise ScenarioError(source, f"{where}.device",
                                f"no device {kwargs['device']!r}; devices: {', '.join(device_names) or 'none'}")
        start = kwargs.get("start_ns", 0)
        if isinstance(start, int) and start >= duration_ns:
            raise ScenarioError(source, f"{where}.start",
                                f"{format_duration(start)} is not before the end of the run ({format_duration(duration_ns)})")
        workload: Workload = _build(cls, kwargs, source, where, spelled)
        if any(w.name == workload.name for w in out):
            raise ScenarioError(source, f"{where}.name", f"workload name {workload.name!r} is used twice; names must be unique")
        out.append(workload)
    return tuple(out)


def parse_scenario(doc: Mapping[str, Any], source: str) -> ScenarioSpec:
    """A validated :class:`ScenarioSpec` from a parsed TOML document; ``source`` names it in errors."""
    for key in doc:
        if key not in TOP_KEYS:
            raise ScenarioError(source, key, f"unknown key; valid top-level keys: {', '.join(TOP_KEYS)}")
    sid = _scalar(doc, "id", _to_str, source, None)
    if sid is not None and not _NAME.fullmatch(sid):
        raise ScenarioError(source, "id", f"expected letters, digits, '.', '_' or '-' (like 'S1'), {_got(sid)}")
    name = _scalar(doc, "name", _to_str, source)
    if not _NAME.fullmatch(name):
        raise ScenarioError(source, "name", f"expected letters, digits, '.', '_' or '-' (like 'coco-storage'), {_got(name)}")
    title = _scalar(doc, "title", _to_str, source, name)
    checks = _scalar(doc, "checks", _to_str, source, "")
    if "duration" in doc and "duration_ns" in doc:
        raise ScenarioError(source, "duration_ns", "'duration' is already given; give one of them")
    if "duration" not in doc and "duration_ns" not in doc:
        raise ScenarioError(source, "duration", 'missing; expected a duration ("10s", "25min") or integer nanoseconds')
    dkey = "duration" if "duration" in doc else "duration_ns"
    duration_ns = _scalar(doc, dkey, parse_duration, source)
    if duration_ns <= 0:
        raise ScenarioError(source, dkey, f"expected a positive duration, {_got(doc[dkey])}")
    seed = _scalar(doc, "seed", _to_int, source, 1)
    if seed < 0:
        raise ScenarioError(source, "seed", f"expected an integer >= 0, {_got(seed)}")
    machine = _parse_machine(doc, source)
    devices = _parse_devices(doc, source)
    policies, options = _parse_policies(doc, source, machine.cmdline)
    costs = _parse_costs(doc, source)
    workloads = _parse_workloads(doc, source, devices, duration_ns)
    return ScenarioSpec(
        id=sid, name=name, title=title, checks=checks, machine=machine, devices=devices,
        workloads=workloads, duration_ns=duration_ns, seed=seed, policies=policies,
        policy_options=types.MappingProxyType(options), costs=types.MappingProxyType(costs), source=source,
    )


def parse_text(text: str, source: str) -> ScenarioSpec:
    """Parse TOML text; a syntax error names ``source`` and the line (tomllib's position)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, "", f"not valid TOML: {exc}") from None
    return parse_scenario(doc, source)


def load_scenario(path: str | Path) -> ScenarioSpec:
    """The scenario in the TOML file at ``path``."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(source, "", f"cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(source, "", f"not UTF-8 text: {exc}") from None
    return parse_text(text, source)


# ------------------------------------------------------------------------------------------
# Built-in scenarios


def _builtin_number(sid: str) -> int:
    return int(sid[1:])


@functools.lru_cache(maxsize=1)
def _builtins() -> tuple[ScenarioSpec, ...]:
    """Every ``scenarios/S<n>-<name>.toml`` of the package, checked against its file name."""
    found: list[ScenarioSpec] = []
    for entry in resources.files(BUILTIN_PACKAGE).joinpath(BUILTIN_DIR).iterdir():
        m = _BUILTIN_FILE.fullmatch(entry.name)
        if m is None:
            continue
        sid, name = m.groups()
        source = f"builtin:{sid}"
        spec = parse_text(entry.read_text(encoding="utf-8"), source)
        if spec.id != sid or spec.name != name:
            raise ScenarioError(source, "id", f"file {entry.name} must hold id = {sid!r} and name = {name!r}")
        if not spec.checks or spec.title == spec.name:
            raise ScenarioError(source, "checks", "a built-in scenario states its title and what it checks")
        found.append(spec)
    found.sort(key=lambda s: _builtin_number(s.id or "S0"))
    return tuple(found)


def builtin_scenarios() -> list[ScenarioSpec]:
    """The built-in scenarios in id order (S1, S4, S5, S6, S7, S10, S11, S12, S14)."""
    return list(_builtins())


def find_scenario(ref: str) -> ScenarioSpec:
    """A built-in by id (case-insensitive, ``s4``) or name, else the TOML file at path ``ref``."""
    key = ref.strip()
    for spec in _builtins():
        if key.lower() in ((spec.id or "").lower(), spec.name.lower()):
            return spec
    path = Path(key)
    if key.endswith(".toml") or path.exists():
        return load_scenario(path)
    known = "; ".join(f"{s.id} ({s.name})" for s in _builtins())
    raise ScenarioError(ref, "", f"no built-in scenario and no .toml file by that name; built-ins: {known}")


__all__ = [
    "ScenarioError",
    "ScenarioSpec",
    "Workload",
    "builtin_scenarios",
    "find_scenario",
    "load_scenario",
    "parse_scenario",
    "parse_text",
]
