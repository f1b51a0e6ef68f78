"""``swiotlb sweep``: a grid of runs (scenarios x policies x pool sizes x knobs x seeds), resumable.

A sweep file (TOML) names the axes; :func:`load_sweep` checks it completely and expands it into
:class:`Cell` objects, each one simulation with a stable id (a hash of its canonical parameters,
the scenario's text included). :func:`run_sweep` runs the cells that are not finished yet, in
worker processes (:class:`concurrent.futures.ProcessPoolExecutor`) or on a Dask cluster, and
appends each finished cell to the output directory:

* ``manifest.sqlite`` (WAL): the sweep's hash and text, and every cell with its parameters and
  status (``pending``, ``done`` or ``error``);
* ``cells/<id>.parquet`` (zstd): one row per cell, its parameters, the flattened metrics of
  :func:`swiotlb.lab.compare.flatten`, the effective boot pool and the whole record as canonical
  JSON. A file is written under a temporary name and renamed before its cell is marked done, so
  an interrupted sweep resumes where it stopped and a finished one is not recomputed.

A cell's record depends on its parameters only (the simulator reads no clock and draws every
random number from the seed), so the same cell gives byte-identical records in any process, on
any worker and in any order. docs/sweeps.md describes the file format and the outputs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import os
import sqlite3
import time
import tomllib
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from swiotlb.core.constants import IO_TLB_SHIFT
from swiotlb.lab.advise import with_pool
from swiotlb.core.sizing import parse_cmdline
from swiotlb.workloads.scenario import (
    BUILTIN_DIR,
    BUILTIN_PACKAGE,
    ScenarioError,
    ScenarioSpec,
    find_scenario,
    load_scenario,
    parse_text,
)
from swiotlb.workloads.units import parse_bytes, parse_duration

FORMAT_VERSION = 1
"""Part of every cell id: bump it when a cell's meaning or its row changes."""

SWEEP_KEYS = ("name", "scenarios", "policies", "pool_sizes", "seeds", "duration", "duration_ns")
TOP_KEYS = ("sweep", "knobs")
SLOT_BYTES = 1 << IO_TLB_SHIFT
MANIFEST = "manifest.sqlite"
CELLS_DIR = "cells"
DASK_CONNECT_TIMEOUT_S = 10
"""How long ``--dask ADDRESS`` waits for the scheduler before it gives up."""


class SweepError(ScenarioError):
    """A sweep file that cannot be used: ``<file>: <key>: <what was expected>, got <value>``."""


def _got(value: object) -> str:
    return f"got {value!r}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ------------------------------------------------------------------------------------------
# Cells


@dataclass(frozen=True)
class ScenarioText:
    """A scenario as it crosses to workers: its source (``builtin:S6`` or a path) and its TOML
    text, parsed again on the worker (a remote Dask worker need not have the file)."""

    source: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Cell:
    """One simulation of the grid. ``pool_slots`` None keeps the scenario's own pool; ``knobs``
    are the policy's knobs set by the sweep (sorted by name), on top of the scenario's own."""

    scenario: str  # the scenario's ref (id, else name)
    scenario_sha256: str
    policy: str
    pool_slots: int | None
    seed: int
    duration_ns: int
    knobs: tuple[tuple[str, Any], ...] = ()

    @property
    def params(self) -> dict[str, Any]:
        """The canonical parameters (what the id hashes)."""
        return {
            "format": FORMAT_VERSION, "scenario": self.scenario, "scenario_sha256": self.scenario_sha256,
            "policy": self.policy, "pool_slots": self.pool_slots, "seed": self.seed,
            "duration_ns": self.duration_ns, "knobs": dict(self.knobs),
        }

    @functools.cached_property
    def id(self) -> str:
        return hashlib.sha256(canonical_json(self.params).encode("utf-8")).hexdigest()[:20]

    @property
    def pool_label(self) -> str:
        return pool_label(self.pool_slots)

    @property
    def knobs_text(self) -> str:
        return canonical_json(dict(self.knobs))

    def describe(self) -> str:
        knobs = " ".join(f"{k}={v}" for k, v in self.knobs)
        return f"{self.scenario} {self.policy} pool={self.pool_label} seed={self.seed}" + (f" {knobs}" if knobs else "")


@dataclass(frozen=True)
class CellTask:
    """What a worker needs to run a cell: the cell and its scenario's text."""

    cell: Cell
    scenario: ScenarioText


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def pool_label(slots: int | None) -> str:
    """``default``, ``64M``, ``512K`` or ``<n> slots``: how a pool size is shown."""
    if slots is None:
        return "default"
    nbytes = slots * SLOT_BYTES
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift}{unit}"
    return f"{slots} slots"  # pragma: no cover - a slot is 2 KiB, so K always divides


# ------------------------------------------------------------------------------------------
# The sweep file


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep: its cells in grid order and the scenarios' texts."""

    source: str
    name: str
    cells: tuple[Cell, ...]
    scenarios: Mapping[str, ScenarioText]  # by the scenario's ref
    text: str = ""

    @functools.cached_property
    def hash(self) -> str:
        """What identifies the sweep: its set of cells (order and spelling do not count)."""
        return hashlib.sha256("\n".join(sorted(c.id for c in self.cells)).encode()).hexdigest()[:20]

    def task(self, cell: Cell) -> CellTask:
        return CellTask(cell, self.scenarios[cell.scenario])


def _scenario_text(spec: ScenarioSpec) -> ScenarioText:
    if spec.source.startswith("builtin:"):
        sid = spec.source.removeprefix("builtin:")
        for entry in resources.files(BUILTIN_PACKAGE).joinpath(BUILTIN_DIR).iterdir():
            if entry.name.startswith(f"{sid}-") and entry.name.endswith(".toml"):
                return ScenarioText(spec.source, entry.read_text(encoding="utf-8"))
        raise AssertionError(f"no file for {spec.source}")  # pragma: no cover
    return ScenarioText(spec.source, Path(spec.source).read_text(encoding="utf-8"))


def _list(table: Mapping[str, Any], key: str, source: str, what: str) -> list[Any] | None:
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, list) or not value:
        raise SweepError(source, f"sweep.{key}", f"expected a non-empty list of {what}, {_got(value)}")
    return value


def _unique(values: Sequence[Any], source: str, key: str, shown: Sequence[Any] | None = None) -> None:
    seen: dict[Any, int] = {}
    for i, v in enumerate(values):
        if v in seen:
            raw = (shown or values)[i]
            raise SweepError(source, f"{key}[{i}]", f"{raw!r} repeats {key}[{seen[v]}]; each value once")
        seen[v] = i


def _scenarios(table: Mapping[str, Any], source: str, base: Path) -> list[ScenarioSpec]:
    refs = _list(table, "scenarios", source, "scenario ids, names or .toml paths")
    if refs is None:
        raise SweepError(source, "sweep.scenarios", 'missing; expected a list of scenario ids, names or paths (["S1", "S6"])')
    specs: list[ScenarioSpec] = []
    for i, ref in enumerate(refs):
        if not isinstance(ref, str) or not ref.strip():
            raise SweepError(source, f"sweep.scenarios[{i}]", f"expected a scenario id, name or .toml path, {_got(ref)}")
        local = base / ref
        try:
            spec = load_scenario(local) if ref.endswith(".toml") and local.exists() else find_scenario(ref)
        except ScenarioError as exc:
            raise SweepError(source, f"sweep.scenarios[{i}]", str(exc)) from None
        specs.append(spec)
    _unique([s.ref for s in specs], source, "sweep.scenarios", refs)
    return specs


def _policies(table: Mapping[str, Any], source: str) -> list[str] | None:
    from swiotlb.policies import POLICIES

    raw = _list(table, "policies", source, f"policy names ({', '.join(POLICIES)})")
    if raw is None:
        return None
    for i, name in enumerate(raw):
        if not isinstance(name, str) or name not in POLICIES:
            raise SweepError(source, f"sweep.policies[{i}]",
                             f"unknown policy {name!r}; known policies: {', '.join(POLICIES)}")
    _unique(raw, source, "sweep.policies")
    return list(raw)


def _pool_sizes(table: Mapping[str, Any], source: str) -> list[int | None]:
    raw = _list(table, "pool_sizes", source, 'pool sizes ("64M", a number of 2 KiB slots, or "default")')
    if raw is None:
        return [None]
    out: list[int | None] = []
    for i, value in enumerate(raw):
        key = f"sweep.pool_sizes[{i}]"
        if value == "default":
            out.append(None)
            continue
        if _is_int(value):
            if value <= 0:
                raise SweepError(source, key, f"expected a positive number of slots, {_got(value)}")
            out.append(value)
            continue
        if not isinstance(value, str):
            raise SweepError(source, key, f'expected a size ("64M"), a number of slots or "default", {_got(value)}')
        try:
            nbytes = parse_bytes(value)
        except ValueError as exc:
            raise SweepError(source, key, f'{exc} (or a number of slots, or "default")') from None
        if nbytes <= 0 or nbytes % SLOT_BYTES:
            raise SweepError(source, key, f"expected a positive whole number of 2 KiB slots, {_got(value)}")
        out.append(nbytes // SLOT_BYTES)
    _unique(out, source, "sweep.pool_sizes", raw)
    return out


def _seeds(table: Mapping[str, Any], source: str) -> list[int] | None:
    if "seeds" not in table:
        return None
    raw = table["seeds"]
    if isinstance(raw, dict):
        for key in raw:
            if key not in ("count", "start"):
                raise SweepError(source, f"sweep.seeds.{key}", "unknown key; expected count and optionally start")
        count, start = raw.get("count"), raw.get("start", 0)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise SweepError(source, "sweep.seeds.count", f"expected an integer >= 1, {_got(count)}")
        if not _is_int(start) or start < 0:
            raise SweepError(source, "sweep.seeds.start", f"expected an integer >= 0, {_got(start)}")
        return list(range(start, start + count))
    if not isinstance(raw, list) or not raw:
        raise SweepError(source, "sweep.seeds", f"expected a non-empty list of integers >= 0 or {{count = N}}, {_got(raw)}")
    for i, seed in enumerate(raw):
        if not _is_int(seed) or seed < 0:
            raise SweepError(source, f"sweep.seeds[{i}]", f"expected an integer >= 0, {_got(seed)}")
    _unique(raw, source, "sweep.seeds")
    return list(raw)


def _duration(table: Mapping[str, Any], source: str) -> int | None:
    if "duration" in table and "duration_ns" in table:
        raise SweepError(source, "sweep.duration_ns", "'duration' is already given; give one of them")
    key = "duration" if "duration" in table else "duration_ns" if "duration_ns" in table else None
    if key is None:
        return None
    try:
        ns = parse_duration(table[key])
    except ValueError as exc:
        raise SweepError(source, f"sweep.{key}", str(exc)) from None
    if ns <= 0:
        raise SweepError(source, f"sweep.{key}", f"expected a positive duration, {_got(table[key])}")
    return ns


def _knob_axes(doc: Mapping[str, Any], source: str, policies: Sequence[str] | None) -> dict[str, list[tuple[str, list[Any]]]]:
    """``[knobs.<policy>]``: per policy, (knob, values) in file order; a scalar is one value."""
    from swiotlb.policies import POLICIES
    from swiotlb.policies.config import knob_defaults
    from swiotlb.workloads.scenario import _knob_value

    raw = doc.get("knobs", {})
    if not isinstance(raw, dict):
        raise SweepError(source, "knobs", f"expected tables [knobs.<policy>], {_got(raw)}")
    axes: dict[str, list[tuple[str, list[Any]]]] = {}
    for pname, knobs in raw.items():
        where = f"knobs.{pname}"
        if pname not in POLICIES:
            raise SweepError(source, where, f"unknown policy {pname!r}; known policies: {', '.join(POLICIES)}")
        if policies is not None and pname not in policies:
            raise SweepError(source, where, f"policy {pname!r} is not in sweep.policies ({', '.join(policies)})")
        if not isinstance(knobs, dict):
            raise SweepError(source, where, f"expected a table of knobs ([{where}]), {_got(knobs)}")
        defaults = knob_defaults(POLICIES[pname])
        out: list[tuple[str, list[Any]]] = []
        for key, value in knobs.items():
            name = key if key in defaults else f"{key}_ns" if f"{key}_ns" in defaults else None
            if name is None:
                raise SweepError(source, f"{where}.{key}",
                                 f"policy {pname!r} has no such knob; knobs: {', '.join(defaults) or 'none'}")
            if any(n == name for n, _ in out):
                raise SweepError(source, f"{where}.{key}", f"knob {name!r} is given twice; give one spelling")
            values = value if isinstance(value, list) else [value]
            if not values:
                raise SweepError(source, f"{where}.{key}", "expected a value or a non-empty list of values, got []")
            converted = []
            for i, v in enumerate(values):
                vkey = f"{where}.{key}[{i}]" if isinstance(value, list) else f"{where}.{key}"
                try:
                    converted.append(_knob_value(name, v, defaults[name]))
                except ValueError as exc:
                    raise SweepError(source, vkey, str(exc)) from None
            _unique(converted, source, f"{where}.{key}", values)
            out.append((name, converted))
        axes[pname] = out
    return axes


def _check_combination(scenario: ScenarioSpec, policy: str, cmdline: str, knobs: Mapping[str, Any],
                       source: str, where: str) -> None:
    """The policy's own checks on the scenario's knobs merged with the sweep's, on this pool."""
    from swiotlb.workloads.scenario import _parse_policies

    merged = {**scenario.policy_options.get(policy, {}), **knobs}
    try:
        _parse_policies({"policies": [policy], "policy": {policy: merged}}, scenario.source, cmdline)
    except ScenarioError as exc:
        combo = ", ".join(f"{k}={v!r}" for k, v in sorted(knobs.items()))
        raise SweepError(source, where, f"with scenario {scenario.ref}" + (f" and {combo}" if combo else "")
                         + f": {exc.expected}") from None


def parse_sweep(doc: Mapping[str, Any], source: str, *, base: Path | None = None, name: str | None = None,
                text: str = "") -> SweepSpec:
    """A checked :class:`SweepSpec` from a parsed TOML document; ``source`` names it in errors and
    relative scenario paths are looked up under ``base`` first."""
    for key in doc:
        if key not in TOP_KEYS:
            raise SweepError(source, key, f"unknown key; valid top-level keys: {', '.join(TOP_KEYS)}")
    if "sweep" not in doc:
        raise SweepError(source, "sweep", "missing; expected a [sweep] table (scenarios, policies, pool_sizes, seeds)")
    table = doc["sweep"]
    if not isinstance(table, dict):
        raise SweepError(source, "sweep", f"expected a table ([sweep]), {_got(table)}")
    for key in table:
        if key not in SWEEP_KEYS:
            raise SweepError(source, f"sweep.{key}", f"unknown key; valid keys: {', '.join(SWEEP_KEYS)}")
    sweep_name = table.get("name", name or Path(source).stem)
    if not isinstance(sweep_name, str) or not sweep_name:
        raise SweepError(source, "sweep.name", f"expected a string, {_got(sweep_name)}")
    scenarios = _scenarios(table, source, base or Path("."))
    policies = _policies(table, source)
    pools = _pool_sizes(table, source)
    seeds = _seeds(table, source)
    duration = _duration(table, source)
    axes = _knob_axes(doc, source, policies)
    cells: list[Cell] = []
    texts: dict[str, ScenarioText] = {}
    for scenario in scenarios:
        st = texts[scenario.ref] = _scenario_text(scenario)
        for policy in policies or scenario.policies:
            names = [n for n, _ in axes.get(policy, [])]
            combos = [dict(zip(names, vals)) for vals in itertools.product(*(v for _, v in axes.get(policy, [])))]
            for slots in pools:
                cmdline = scenario.machine.cmdline if slots is None else with_pool(scenario.machine.cmdline, slots)
                for knobs in combos:
                    where = f"knobs.{policy}" if knobs else "sweep.policies"
                    _check_combination(scenario, policy, cmdline, knobs, source, where)
                    for seed in seeds if seeds is not None else [scenario.seed]:
                        cells.append(Cell(scenario.ref, st.sha256, policy, slots, seed,
                                          duration if duration is not None else scenario.duration_ns,
                                          tuple(sorted(knobs.items()))))
    return SweepSpec(source, sweep_name, tuple(cells), types.MappingProxyType(texts), text)


def load_sweep(path: str | Path) -> SweepSpec:
    """The sweep in the TOML file at ``path``."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SweepError(source, "", f"cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SweepError(source, "", f"not UTF-8 text: {exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(source, "", f"not valid TOML: {exc}") from None
    return parse_sweep(doc, source, base=Path(path).parent, name=Path(path).stem, text=text)


# ------------------------------------------------------------------------------------------
# Running one cell (in a worker)


@functools.lru_cache(maxsize=32)
def _parsed(source: str, text: str) -> ScenarioSpec:
    return parse_text(text, source)


def cell_scenario(task: CellTask) -> ScenarioSpec:
    """The scenario of ``task`` with the cell's pool and knobs applied (not its seed/duration)."""
    cell = task.cell
    spec = _parsed(task.scenario.source, task.scenario.text)
    if cell.pool_slots is not None:
        machine = dataclasses.replace(spec.machine, cmdline=with_pool(spec.machine.cmdline, cell.pool_slots))
        spec = dataclasses.replace(spec, machine=machine)
    if cell.knobs:
        options = dict(spec.policy_options)
        options[cell.policy] = types.MappingProxyType({**options.get(cell.policy, {}), **dict(cell.knobs)})
        spec = dataclasses.replace(spec, policy_options=types.MappingProxyType(options))
    return spec


def run_cell(task: CellTask) -> dict[str, Any]:
    """Run one cell: ``{"record": <the simulator's record>, "boot_pool_slots": <int or None>}``.

    A policy the machine cannot have (``lending`` without a CMA region) gives a record with
    ``skipped`` and the reason, as ``swiotlb compare`` does.
    """
    from swiotlb.lab.runner import build_simulation
    from swiotlb.policies.config import ConfigError

    cell = task.cell
    spec = cell_scenario(task)
    try:
        sim = build_simulation(spec, cell.policy, seed=cell.seed, duration_ns=cell.duration_ns)
    except ConfigError as exc:
        return {"record": {"scenario": spec.ref, "policy": cell.policy, "seed": cell.seed, "skipped": str(exc)},
                "boot_pool_slots": None}
    plan = sim.machine.plan
    t0 = time.perf_counter()
    record = sim.run()
    return {"record": record, "boot_pool_slots": plan.nslabs if plan.enabled else 0,
            "elapsed_s": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------
# Rows and files

PARAM_COLUMNS = ("cell_id", "scenario", "scenario_sha256", "policy", "pool", "pool_slots", "boot_pool_slots",
                 "seed", "duration_ns", "knobs", "skipped", "record_sha256", "record_json")


def cell_row(cell: Cell, result: Mapping[str, Any]) -> dict[str, Any]:
    """The Parquet row of a finished cell: parameters, ``knob_<name>`` columns, flattened metrics."""
    from swiotlb.lab.compare import flatten

    record = result["record"]
    record_json = canonical_json(record)
    row: dict[str, Any] = {
        "cell_id": cell.id, "scenario": cell.scenario, "scenario_sha256": cell.scenario_sha256,
        "policy": cell.policy, "pool": cell.pool_label, "pool_slots": cell.pool_slots,
        "boot_pool_slots": result.get("boot_pool_slots"), "seed": cell.seed, "duration_ns": cell.duration_ns,
        "knobs": cell.knobs_text, "skipped": record.get("skipped"),
        "record_sha256": hashlib.sha256(record_json.encode()).hexdigest(), "record_json": record_json,
    }
    for name, value in cell.knobs:
        row[f"knob_{name}"] = value
    for key, value in flatten(record).items():
        if key not in row and key not in ("scenario", "policy", "seed"):
            row[key] = value
    return row


def _dtype(key: str, value: Any) -> Any:
    import polars as pl

    if isinstance(value, bool):
        return pl.Boolean
    if isinstance(value, int):
        return pl.Int64
    if isinstance(value, float):
        return pl.Float64
    if isinstance(value, str) or key in ("skipped", "pool"):
        return pl.String
    return pl.Int64  # None: every metric is an integer or null


def write_row(row: Mapping[str, Any], path: Path) -> None:
    """One row as Parquet (zstd), written under a temporary name and renamed into place."""
    import polars as pl

    frame = pl.DataFrame({k: [v] for k, v in row.items()}, schema={k: _dtype(k, v) for k, v in row.items()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.write_parquet(tmp, compression="zstd")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_results(out: str | Path) -> Any:
    """Every finished cell under ``out`` as one polars DataFrame (sorted by cell id)."""
    import polars as pl

    files = sorted((Path(out) / CELLS_DIR).glob("*.parquet"))
    if not files:
        return pl.DataFrame(schema={"cell_id": pl.String})
    frames = [pl.read_parquet(f) for f in files]
    return pl.concat(frames, how="diagonal_relaxed").sort("cell_id")


# ------------------------------------------------------------------------------------------
# The manifest


class Manifest:
    """``manifest.sqlite`` (WAL): the sweep's hash and text, and each cell's status."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / MANIFEST
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=10000")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS cells (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, params TEXT NOT NULL, "
            "status TEXT NOT NULL DEFAULT 'pending', file TEXT, error TEXT, elapsed_s REAL, finished_at REAL)")

    def close(self) -> None:
        self.db.close()

    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta").fetchall())

    def register(self, spec: SweepSpec) -> None:
        """Record ``spec`` (a new directory) or check it is the sweep already recorded here."""
        meta = self.meta()
        if "spec_hash" in meta and meta["spec_hash"] != spec.hash:
            raise SweepError(spec.source, "", (
                f"{self.path.parent} holds another sweep ({meta.get('spec_source', '?')}, hash {meta['spec_hash']}); "
                f"this one has hash {spec.hash}: use another --out or remove that directory"))
        with self.transaction():
            if "spec_hash" not in meta:
                for key, value in (("spec_hash", spec.hash), ("spec_source", spec.source), ("spec_name", spec.name),
                                   ("spec_text", spec.text), ("format", str(FORMAT_VERSION)),
                                   ("created", str(time.time()))):
                    self.db.execute("INSERT INTO meta VALUES (?, ?)", (key, value))
            self.db.executemany("INSERT OR IGNORE INTO cells (id, seq, params) VALUES (?, ?, ?)",
                                [(c.id, i, canonical_json(c.params)) for i, c in enumerate(spec.cells)])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def status(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT id, status FROM cells").fetchall())

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, COUNT(*) FROM cells GROUP BY status").fetchall())

    def mark_done(self, cell_id: str, file: str, elapsed_s: float | None) -> None:
        self.db.execute("UPDATE cells SET status='done', file=?, error=NULL, elapsed_s=?, finished_at=? WHERE id=?",
                        (file, elapsed_s, time.time(), cell_id))

    def mark_error(self, cell_id: str, error: str) -> None:
        self.db.execute("UPDATE cells SET status='error', error=?, finished_at=? WHERE id=?",
                        (error, time.time(), cell_id))

    def errors(self) -> list[tuple[str, str]]:
        return list(self.db.execute("SELECT id, error FROM cells WHERE status='error' ORDER BY seq").fetchall())


# ------------------------------------------------------------------------------------------
# Running a sweep


@dataclass
class SweepReport:
    """What :func:`run_sweep` did."""

    out: Path
    total: int
    already: int  # finished before this run
    computed: int = 0
    adopted: int = 0  # files found complete but not yet marked done (an interrupted commit)
    errors: list[tuple[Cell, str]] = field(default_factory=list)
    remaining: int = 0  # left for a later run (--limit)
    elapsed_s: float = 0.0


Progress = Callable[[Cell, str], None]
"""Called with each cell that finishes and ``"done"``, ``"skipped"`` or ``"error"``."""


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


@contextmanager
def dask_executor(address: str, workers: int) -> Iterator[Executor]:
    """A :class:`concurrent.futures.Executor` on a Dask cluster: ``local`` starts a LocalCluster of
    ``workers`` single-threaded worker processes, anything else is a scheduler address."""
    import importlib
    import logging

    try:
        distributed: Any = importlib.import_module("distributed")  # untyped: keep it Any
    except ImportError:  # pragma: no cover - depends on the installation
        raise SweepError("--dask", "", "Dask is not installed: pip install 'swiotlb[sweep]' "
                                       "(or 'dask[distributed]')") from None
    cluster: Any = None
    if address == "local":
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = distributed.Client(cluster)
    else:
        try:
            client = distributed.Client(address, timeout=DASK_CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SweepError("--dask", address, f"cannot reach a Dask scheduler there within "
                                                f"{DASK_CONNECT_TIMEOUT_S} s ({exc})") from None
    try:
        yield client.get_executor(pure=False)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


@contextmanager
def _local_executor(workers: int) -> Iterator[Executor]:
    import multiprocessing

    # spawn: the parent may hold polars' and rich's threads, which fork does not copy safely
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def run_sweep(spec: SweepSpec, out: str | Path, *, workers: int | None = None, dask: str | None = None,
              limit: int | None = None, progress: Progress | None = None,
              started: Callable[[int, int], None] | None = None) -> SweepReport:
    """Run the cells of ``spec`` not yet finished under ``out`` (at most ``limit`` of them).

    ``workers`` processes (default: the CPU count; 1 runs in this process) or, with ``dask``,
    a Dask cluster (``"local"`` or a scheduler address). ``started(total, already_done)`` is
    called once the manifest is read. Cells that raise are marked ``error`` and retried by the
    next run; the others are unaffected.
    """
    t0 = time.perf_counter()
    out = Path(out)
    cells_dir = out / CELLS_DIR
    manifest = Manifest(out)
    try:
        manifest.register(spec)
        cells_dir.mkdir(exist_ok=True)
        for tmp in cells_dir.glob(".*.tmp"):  # an interrupted write
            tmp.unlink(missing_ok=True)
        status = manifest.status()
        report = SweepReport(out, len(spec.cells), 0)
        pending: list[Cell] = []
        for cell in spec.cells:
            if status.get(cell.id) == "done":
                report.already += 1
                continue
            path = cells_dir / f"{cell.id}.parquet"
            if path.exists():  # written and renamed, but the run stopped before marking it done
                manifest.mark_done(cell.id, str(path.relative_to(out)), None)
                report.adopted += 1
                continue
            pending.append(cell)
        if started is not None:
            started(report.total, report.already + report.adopted)
        if limit is not None:
            report.remaining = max(0, len(pending) - limit)
            pending = pending[:limit]
        if pending:
            _execute(spec, pending, out, manifest, report, workers or default_workers(), dask, progress)
    finally:
        manifest.close()
    report.elapsed_s = time.perf_counter() - t0
    return report


def _execute(spec: SweepSpec, pending: Sequence[Cell], out: Path, manifest: Manifest, report: SweepReport,
             workers: int, dask: str | None, progress: Progress | None) -> None:
    def finish(cell: Cell, result: Mapping[str, Any] | None, error: str | None, elapsed: float | None) -> None:
        if result is None:
            manifest.mark_error(cell.id, error or "unknown error")
            report.errors.append((cell, error or "unknown error"))
            kind = "error"
        else:
            path = out / CELLS_DIR / f"{cell.id}.parquet"
            write_row(cell_row(cell, result), path)
            manifest.mark_done(cell.id, str(path.relative_to(out)), elapsed)
            report.computed += 1
            kind = "skipped" if "skipped" in result["record"] else "done"
        if progress is not None:
            progress(cell, kind)

    if dask is None and (workers <= 1 or len(pending) == 1):
        for cell in pending:
            t = time.perf_counter()
            try:
                result = run_cell(spec.task(cell))
            except Exception as exc:  # a bug in one cell must not lose the others
                finish(cell, None, f"{type(exc).__name__}: {exc}", None)
            else:
                finish(cell, result, None, result.get("elapsed_s", time.perf_counter() - t))
        return
    n = min(workers, len(pending))
    context = dask_executor(dask, n if dask == "local" else workers) if dask is not None else _local_executor(n)
    with context as executor:
        futures: dict[Future[dict[str, Any]], Cell] = {executor.submit(run_cell, spec.task(c)): c for c in pending}
        for fut in as_completed(futures):
            cell = futures[fut]
            try:
                result = fut.result()
            except Exception as exc:
                finish(cell, None, f"{type(exc).__name__}: {exc}", None)
            else:
                finish(cell, result, None, result.get("elapsed_s"))


__all__ = [
    "Cell",
    "CellTask",
    "Manifest",
    "SweepError",
    "SweepReport",
    "SweepSpec",
    "load_results",
    "load_sweep",
    "parse_sweep",
    "pool_label",
    "run_cell",
    "run_sweep",
    "with_pool",
]
