"""Metrics taken from one run of a benchmarked command (``swiotlb bench ab --metric``).

A metric is named by a spec string, parsed once before anything runs so that a typo fails at
once and not after an hour of rounds:

``wall``
    the command's wall time in seconds (measured by the runner, not parsed).
``regex:PATTERN`` (``--regex PATTERN``)
    the first capture group of the first match of PATTERN in stdout (stderr when stdout has
    none), as a float: ``regex:value=(\\S+)``.
``json:PATH``
    a number at PATH in the JSON document the command prints: ``json:$.a.b``,
    ``json:jobs[0].read.iops``, ``json:jobs[0]["job options"].bs``. The leading ``$`` is
    optional; ``.name`` and ``[index]`` steps; ``["key"]`` for keys with dots or spaces.
``fio:[DIR.]STAT[@JOB]``
    from fio's ``--output-format=json`` (fio 3.x, latencies in ``*_ns``). DIR is ``read``,
    ``write``, ``trim`` or ``total`` (the default: all three). STAT is ``iops``, ``bw`` (KiB/s,
    as fio prints it), ``bw_bytes`` (B/s), ``io_bytes``, ``total_ios``, ``clat_mean``,
    ``lat_mean``, ``slat_mean`` (ns), or a percentile ``clat_p99``, ``clat_p99.9``,
    ``lat_p50``... (ns; one fio reports, see its ``percentile_list``). JOB is a job's index in
    fio's ``jobs`` list (all digits) or its name; every job with that name (``numjobs``) counts. Without
    ``@JOB`` all jobs are summed.

How jobs and directions are summed: counts and rates add; a mean latency is the mean over all
completed I/Os (weighted by each part's ``N``); a percentile of several parts is read off the
mixture of their distributions, each part's distribution interpolated linearly through the
percentile table fio prints. That is exact for one part and for identical parts and otherwise as
fine as fio's table; fio's own ``group_reporting`` merges its histograms and is exact, so prefer
it when the aggregate percentile matters.

Output that lacks the metric raises :class:`MetricError`; the runner reports it with the
command's output and the round.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np


class MetricError(ValueError):
    """A bad metric spec, or a command's output without the metric. The message names the spec
    or path and says what was found instead."""


@dataclass(frozen=True)
class Output:
    """What one run of a command left behind, for the metrics to read."""

    stdout: str
    stderr: str
    wall_s: float


class Metric(Protocol):
    """One number taken from one run's output."""

    @property
    def name(self) -> str:
        """The spec it was parsed from; the key in results."""

    def extract(self, out: Output) -> float:
        """The value, or :class:`MetricError` naming the spec and what is missing."""


def _number(value: object, where: str) -> float:
    """A JSON value as a float: numbers, and strings that spell one (fio writes a few so)."""
    if isinstance(value, bool) or value is None:
        raise MetricError(f"{where} is {json.dumps(value)}, not a number")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise MetricError(f"{where} is the string {value!r}, not a number") from None
    raise MetricError(f"{where} is a JSON {type(value).__name__}, not a number")


# --- wall time ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WallMetric:
    """The command's wall time in seconds, as the runner measured it."""

    name: str = "wall"

    def extract(self, out: Output) -> float:
        return out.wall_s


# --- regex -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegexMetric:
    """The first capture group of the first match, in stdout or else stderr."""

    name: str
    pattern: re.Pattern[str]

    @classmethod
    def parse(cls, pattern: str, name: str | None = None) -> RegexMetric:
        """Compile ``pattern``; it must have a capture group, which holds the number."""
        try:
            compiled = re.compile(pattern, re.MULTILINE)
        except re.error as exc:
            raise MetricError(f"regex {pattern!r} does not compile: {exc}") from None
        if compiled.groups < 1:
            raise MetricError(f"regex {pattern!r} has no capture group: put the number in (...), "
                              r"e.g. 'value=(\S+)'")
        return cls(name or f"regex:{pattern}", compiled)

    def extract(self, out: Output) -> float:
        for stream in (out.stdout, out.stderr):
            match = self.pattern.search(stream)
            if match is not None:
                text = match.group(1)
                if text is None:
                    raise MetricError(f"regex {self.pattern.pattern!r} matched {match.group(0)!r} "
                                      "but its first group took part in no match")
                try:
                    return float(text)
                except ValueError:
                    raise MetricError(f"regex {self.pattern.pattern!r} captured {text!r}, "
                                      "not a number") from None
        raise MetricError(f"regex {self.pattern.pattern!r} matches nothing in the output")


# --- JSON path ---------------------------------------------------------------------------------

_NAME = re.compile(r"[^.\[\]\s\"']+")
_INDEX = re.compile(r"\[\s*(-?\d+)\s*\]")
_DQUOTED = re.compile(r'\[\s*("(?:[^"\\]|\\.)*")\s*\]')
_SQUOTED = re.compile(r"\[\s*'([^']*)'\s*\]")

Step = str | int


def parse_json_path(path: str) -> tuple[Step, ...]:
    """Steps of a path like ``$.jobs[0].read.iops`` or ``jobs[0]["job options"].bs``.

    Keys are strings, indices are ints. A malformed path raises :class:`MetricError` naming the
    path and the position where it stopped making sense.
    """
    steps: list[Step] = []
    pos = 1 if path.startswith("$") else 0
    first = pos == 0  # a bare first key ("jobs[0]"), but after "$" a step starts with "." or "["
    while pos < len(path):
        ch = path[pos]
        if ch == ".":
            m = _NAME.match(path, pos + 1)
            if m is None:
                raise MetricError(f"malformed JSON path {path!r}: expected a key after '.' at position {pos}")
            steps.append(m.group(0))
            pos = m.end()
        elif ch == "[":
            if (m := _INDEX.match(path, pos)) is not None:
                steps.append(int(m.group(1)))
            elif (m := _DQUOTED.match(path, pos)) is not None:
                steps.append(str(json.loads(m.group(1))))
            elif (m := _SQUOTED.match(path, pos)) is not None:
                steps.append(m.group(1))
            else:
                raise MetricError(f"malformed JSON path {path!r}: expected [integer] or [\"key\"] at position {pos}")
            pos = m.end()
        elif first and (m := _NAME.match(path, pos)) is not None:
            steps.append(m.group(0))
            pos = m.end()
        else:
            raise MetricError(f"malformed JSON path {path!r}: unexpected {ch!r} at position {pos}")
        first = False
    if not steps:
        raise MetricError(f"malformed JSON path {path!r}: it names no key or index")
    return tuple(steps)


def _show_path(steps: tuple[Step, ...]) -> str:
    text = "$"
    for s in steps:
        text += f"[{s}]" if isinstance(s, int) else (f".{s}" if _NAME.fullmatch(s) else f"[{json.dumps(s)}]")
    return text


def resolve_json_path(doc: object, steps: tuple[Step, ...], path: str) -> object:
    """The value at ``steps`` in ``doc``; a missing key or index raises :class:`MetricError` that
    names the path, the step and what is there instead."""
    node = doc
    for i, step in enumerate(steps):
        here = _show_path(steps[: i + 1])
        if isinstance(step, int):
            if not isinstance(node, list):
                raise MetricError(f"JSON path {path!r}: {here} indexes a JSON {type(node).__name__}, not a list")
            if not -len(node) <= step < len(node):
                raise MetricError(f"JSON path {path!r}: {here} is out of range (the list has {len(node)} items)")
            node = node[step]
        else:
            if not isinstance(node, dict):
                raise MetricError(f"JSON path {path!r}: {here} looks up a key in a JSON "
                                  f"{type(node).__name__}, not an object")
            if step not in node:
                keys = ", ".join(sorted(map(str, node))[:20])
                raise MetricError(f"JSON path {path!r}: no key {step!r} at {here} (keys: {keys})")
            node = node[step]
    return node


def load_json_output(text: str, what: str) -> Any:
    """The JSON document in a command's output. Programs (fio among them) sometimes print a line
    or two before it, so when the whole text is not JSON the first line starting with ``{`` or
    ``[`` is decoded instead."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for m in re.finditer(r"^[ \t]*[{\[]", text, re.MULTILINE):
        start = m.end() - 1
        try:
            return decoder.raw_decode(text, start)[0]
        except json.JSONDecodeError:
            continue
    head = text.strip()[:120]
    raise MetricError(f"{what}: the output holds no JSON document (it starts {head!r})" if head
                      else f"{what}: the output is empty, no JSON document")


@dataclass(frozen=True)
class JsonPathMetric:
    """A number at a path in the JSON document on stdout."""

    name: str
    path: str
    steps: tuple[Step, ...]

    @classmethod
    def parse(cls, path: str, name: str | None = None) -> JsonPathMetric:
        """Parse ``path`` now, so a malformed one fails before any round runs."""
        return cls(name or f"json:{path}", path, parse_json_path(path))

    def extract(self, out: Output) -> float:
        doc = load_json_output(out.stdout, f"JSON path {self.path!r}")
        return _number(resolve_json_path(doc, self.steps, self.path), f"JSON path {self.path!r}")


# --- fio ---------------------------------------------------------------------------------------

FIO_DIRECTIONS = ("read", "write", "trim")
FIO_SUMS = ("iops", "bw", "bw_bytes", "io_bytes", "total_ios")
FIO_LATENCIES = ("clat", "lat", "slat")
_FIO_STAT = re.compile(r"(?P<lat>clat|lat|slat)_(?:(?P<mean>mean)|p(?P<pct>\d+(?:\.\d+)?))\Z")


@dataclass(frozen=True)
class FioMetric:
    """A number from fio's JSON output: a direction's (or all directions') stat, summed over all
    jobs or over one job (by index or name)."""

    name: str
    direction: str
    stat: str
    job: str | int | None

    @classmethod
    def parse(cls, field: str, name: str | None = None) -> FioMetric:
        """Parse ``[DIR.]STAT[@JOB]``; an unknown direction or stat raises :class:`MetricError`."""
        spec = name or f"fio:{field}"
        body, at, job_text = field.partition("@")
        job: str | int | None = None
        if at:
            if not job_text:
                raise MetricError(f"metric {spec!r}: '@' must be followed by a job index or name")
            job = int(job_text) if job_text.isdigit() else job_text
        direction, dot, stat = body.partition(".")
        if not dot:
            direction, stat = "total", body
        elif direction not in (*FIO_DIRECTIONS, "total"):
            # A dotted percentile without a direction: "clat_p99.9".
            if _FIO_STAT.match(body):
                direction, stat = "total", body
            else:
                raise MetricError(f"metric {spec!r}: unknown fio direction {direction!r} "
                                  f"(one of {', '.join((*FIO_DIRECTIONS, 'total'))})")
        if stat not in FIO_SUMS and not _FIO_STAT.match(stat):
            raise MetricError(f"metric {spec!r}: unknown fio stat {stat!r} (one of {', '.join(FIO_SUMS)}, "
                              "clat_mean, lat_mean, slat_mean, clat_p<percent> such as clat_p99.9)")
        return cls(spec, direction, stat, job)

    def extract(self, out: Output) -> float:
        return fio_value(load_json_output(out.stdout, f"metric {self.name!r}"), self)


def _fio_jobs(doc: object, metric: FioMetric) -> list[dict[str, Any]]:
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
        raise MetricError(f"metric {metric.name!r}: not fio JSON output (no 'jobs' list)")
    jobs: list[dict[str, Any]] = [j for j in doc["jobs"] if isinstance(j, dict)]
    if metric.job is None:
        chosen = jobs
    elif isinstance(metric.job, int):
        if metric.job >= len(jobs):
            raise MetricError(f"metric {metric.name!r}: fio output has no job {metric.job} "
                              f"(it has {len(jobs)} job(s), indices 0-{len(jobs) - 1})")
        chosen = [jobs[metric.job]]
    else:
        chosen = [j for j in jobs if j.get("jobname") == metric.job]
        if not chosen:
            names = ", ".join(sorted({str(j.get("jobname")) for j in jobs}))
            raise MetricError(f"metric {metric.name!r}: fio output has no job named {metric.job!r} (jobs: {names})")
    if not chosen:
        raise MetricError(f"metric {metric.name!r}: fio output has no jobs")
    for j in chosen:
        if j.get("error"):
            raise MetricError(f"metric {metric.name!r}: fio job {j.get('jobname')!r} reports error {j['error']}")
    return chosen


def _fio_parts(doc: object, metric: FioMetric) -> list[tuple[str, dict[str, Any]]]:
    """(label, direction object) for every selected job and direction."""
    dirs = FIO_DIRECTIONS if metric.direction == "total" else (metric.direction,)
    parts = []
    for i, job in enumerate(_fio_jobs(doc, metric)):
        for d in dirs:
            block = job.get(d)
            if isinstance(block, dict):
                parts.append((f"job {i} ({job.get('jobname')}) {d}", block))
            elif metric.direction != "total":
                raise MetricError(f"metric {metric.name!r}: fio job {job.get('jobname')!r} has no {d!r} section")
    return parts


def _mixture_percentile(tables: list[tuple[float, np.ndarray, np.ndarray]], q: float) -> float:
    """The q-quantile (q in percent) of a mixture: each part (weight, percent points, values)
    with its CDF interpolated linearly through its table."""
    import numpy as np

    xs = np.unique(np.concatenate([v for _, _, v in tables]))
    total = sum(w for w, _, _ in tables)
    cdf = sum(w * np.interp(xs, v, p) for w, p, v in tables) / total
    cdf = np.maximum.accumulate(cdf)
    keep = np.concatenate(([True], np.diff(cdf) > 0))
    return float(np.interp(q, cdf[keep], xs[keep]))


def fio_value(doc: object, metric: FioMetric) -> float:
    """The value of ``metric`` in a parsed fio JSON document (see the module docstring for how
    jobs and directions are summed)."""
    parts = _fio_parts(doc, metric)
    if not parts:
        raise MetricError(f"metric {metric.name!r}: the selected fio jobs have no read, write or trim section")
    if metric.stat in FIO_SUMS:
        return sum(_number(block.get(metric.stat), f"metric {metric.name!r}: {label} {metric.stat}")
                   for label, block in parts)
    m = _FIO_STAT.match(metric.stat)
    assert m is not None  # FioMetric.parse let only these through
    key = f"{m.group('lat')}_ns"
    stats = []
    for label, block in parts:
        lat = block.get(key)
        if not isinstance(lat, dict):
            raise MetricError(f"metric {metric.name!r}: {label} has no {key!r} (fio older than 3.0 "
                              "reports latencies in usec under 'clat'; use json: instead)")
        n = _number(lat.get("N", 0), f"metric {metric.name!r}: {label} {key}.N")
        if n > 0:
            stats.append((label, n, lat))
    if not stats:
        raise MetricError(f"metric {metric.name!r}: no completed I/O in the selected jobs and directions")
    if m.group("mean"):
        total = sum(n for _, n, _ in stats)
        return sum(n * _number(lat.get("mean"), f"metric {metric.name!r}: {label} {key}.mean")
                   for label, n, lat in stats) / total
    import numpy as np  # here, not at the top: the CLI should not pay for it at start-up

    want = float(m.group("pct"))
    tables = []
    for label, n, lat in stats:
        table = lat.get("percentile")
        if not isinstance(table, dict) or not table:
            raise MetricError(f"metric {metric.name!r}: {label} has no {key}.percentile table "
                              f"(fio prints {m.group('lat')} percentiles only when asked, e.g. "
                              "--lat_percentiles=1)")
        points = sorted((float(k), _number(v, f"metric {metric.name!r}: {label} {key} percentile {k}"))
                        for k, v in table.items())
        if not any(math.isclose(p, want, abs_tol=1e-9) for p, _ in points):
            have = ", ".join(f"{p:g}" for p, _ in points)
            raise MetricError(f"metric {metric.name!r}: fio reported no {want:g}th percentile for {label} "
                              f"(it has {have}; add it with --percentile_list)")
        tables.append((n, np.array([p for p, _ in points]), np.array([v for _, v in points])))
    if len(tables) == 1:
        return float(np.interp(want, tables[0][1], tables[0][2]))
    return _mixture_percentile(tables, want)


# --- specs -------------------------------------------------------------------------------------

AnyMetric = WallMetric | RegexMetric | JsonPathMetric | FioMetric


def parse_metric(spec: str) -> AnyMetric:
    """A metric from its spec (see the module docstring). Unknown kinds and malformed arguments
    raise :class:`MetricError` naming the spec."""
    kind, colon, arg = spec.partition(":")
    if spec == "wall":
        return WallMetric()
    if not colon or not arg:
        raise MetricError(f"unknown metric {spec!r}: use wall, regex:PATTERN, json:PATH or fio:[DIR.]STAT[@JOB]")
    if kind == "regex":
        return RegexMetric.parse(arg, spec)
    if kind == "json":
        return JsonPathMetric.parse(arg, spec)
    if kind == "fio":
        return FioMetric.parse(arg, spec)
    raise MetricError(f"unknown metric {spec!r}: use wall, regex:PATTERN, json:PATH or fio:[DIR.]STAT[@JOB]")
