"""``swiotlb bench ab`` and ``swiotlb bench show``: a paired A/B benchmark harness.

Two shell commands (``--a``, ``--b``: fio under two kernels or two ``swiotlb=`` settings, or any
program) run in paired rounds, A and B back to back in each round, so that whatever drifts on
the machine hits both sides of a round alike and cancels in their ratio (see
:mod:`swiotlb.lab.abstats`). Order: ``abab`` (A first in every round) or ``random`` (a fair coin
per round from the seeded generator, for programs that warm something up for the one that
follows). Warm-up rounds run first and are not counted. A run lasts ``--rounds`` rounds, or until
``--budget`` seconds of measured rounds would be exceeded, whichever comes first.

Each measurement: the ``--pre`` command if given (drop caches, reset counters; its time is not
measured), then the side's command, timed with :func:`time.perf_counter`; then every metric is
read from its output (:mod:`swiotlb.lab.metrics_parse`). Commands run through the shell with
these variables set, so a command can tell where it is (tests use them to make a fake program
with a known effect and drift)::

    SWIOTLB_AB_SIDE   A or B
    SWIOTLB_AB_ROUND  1, 2, ... for measured rounds; -W ... -1 for the W warm-up rounds

A command that exits non-zero, outlives ``--timeout`` (its whole process group is killed) or
prints no parsable metric stops the run. The failure is reported with its round, side, exit
status and output; the complete rounds before it are kept, analysed and saved. A round counts
only when both of its sides measured every metric.

The results file (``--out``) is JSON, rewritten after every round, so that even a killed run
leaves its rounds behind: ``config``, ``rounds`` (per round its order and per side the wall time
and metric values), ``failure``, ``environment`` and ``result`` (the analysis; the same object
``--json`` prints). Randomness is seeded (``--seed``, 0 by default): the order from
``default_rng([seed, 0])``, the bootstrap of metric i from ``default_rng([seed, 1, i])``, so the
same rounds give the same analysis.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from swiotlb.lab.metrics_parse import AnyMetric, Metric, MetricError, Output, parse_metric

if TYPE_CHECKING:
    import numpy as np

    from swiotlb.lab.abstats import Analysis, Thresholds

# numpy and scipy (through swiotlb.lab.abstats) are imported where they are used: scipy.stats
# alone takes about a second to import, which every other ``swiotlb`` command would pay once the
# lead registers these commands in the CLI.

SCHEMA = "swiotlb-bench-ab/1"
OUTPUT_HEAD, OUTPUT_TAIL = 2000, 4000
"""Characters of a failed command's stdout and stderr kept in the report: the beginning (what
the program is and what it set out to do) and the end (where the error usually is)."""

ORDERS = ("abab", "random")


@dataclass(frozen=True)
class AbConfig:
    """What to run and how. ``metrics`` are spec strings (checked by :func:`parse_metrics`)."""

    cmd_a: str
    cmd_b: str
    metrics: tuple[str, ...] = ("wall",)
    rounds: int | None = 10
    budget_s: float | None = None
    warmup: int = 1
    order: str = "abab"
    pre: str | None = None
    timeout_s: float | None = None
    seed: int = 0
    cov_threshold: float = 0.05
    drift_threshold: float = 0.05
    effect: float = 0.05
    n_resamples: int = 9999

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.rounds is None and self.budget_s is None:
            raise ValueError("give a number of rounds, a time budget, or both")
        if self.rounds is not None and self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        if self.budget_s is not None and not self.budget_s > 0:
            raise ValueError(f"budget must be positive, got {self.budget_s}")
        if self.warmup < 0:
            raise ValueError(f"warm-up rounds cannot be negative, got {self.warmup}")
        if not self.metrics:
            raise ValueError("at least one metric is needed")

    @property
    def thresholds(self) -> Thresholds:
        from swiotlb.lab.abstats import Thresholds

        return Thresholds(cov=self.cov_threshold, drift=self.drift_threshold, effect=self.effect)


def parse_metrics(specs: Sequence[str]) -> list[AnyMetric]:
    """Every metric spec parsed, before anything runs; duplicates are an error too."""
    seen = set()
    out = []
    for spec in specs:
        if spec in seen:
            raise MetricError(f"metric {spec!r} is given twice")
        seen.add(spec)
        out.append(parse_metric(spec))
    return out


@dataclass(frozen=True)
class Sample:
    """One side of one round: its wall time and the value of every metric."""

    wall_s: float
    values: dict[str, float]


@dataclass(frozen=True)
class Round:
    """A complete round: the order its sides ran in ("AB" or "BA") and both samples."""

    round: int
    order: str
    a: Sample
    b: Sample


@dataclass(frozen=True)
class Failure:
    """Why a run stopped early: the round (negative for a warm-up) and side, what went wrong
    (``exit``, ``timeout``, ``metric``, ``pre`` for the pre-command, ``interrupted``), and the
    tail of the command's output."""

    round: int
    side: str
    kind: str
    message: str
    command: str
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""


@dataclass
class AbRun:
    """The state of a run: its config, the rounds measured so far, the failure if one stopped it."""

    config: AbConfig
    rounds: list[Round] = field(default_factory=list)
    failure: Failure | None = None
    started: str = ""
    elapsed_s: float = 0.0


class MeasureError(Exception):
    """A measurement that gave no usable sample; carries the :class:`Failure` to report."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _tail(text: str) -> str:
    """The output kept for a report: all of it, or its head and tail around a marker."""
    if len(text) <= OUTPUT_HEAD + OUTPUT_TAIL:
        return text
    cut = len(text) - OUTPUT_HEAD - OUTPUT_TAIL
    return f"{text[:OUTPUT_HEAD]}\n[... {cut} characters left out ...]\n{text[-OUTPUT_TAIL:]}"


def run_shell(cmd: str, env: dict[str, str], timeout_s: float | None) -> tuple[int | None, str, str, float]:
    """Run ``cmd`` through the shell in its own process group: (exit status or None on timeout,
    stdout, stderr, wall seconds).

    On a timeout the whole group is killed, not only the shell: ``subprocess.run`` kills just its
    child, and a grandchild still holding the pipes would keep the run waiting past the timeout.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace", env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover - the group ended in between
            pass
        stdout, stderr = proc.communicate()
        return None, stdout, stderr, time.perf_counter() - start
    except BaseException:
        # Ctrl-C or another error: leave no benchmark running behind us.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover
            pass
        proc.wait()
        raise
    return proc.returncode, stdout, stderr, time.perf_counter() - start


def measure(config: AbConfig, metrics: Sequence[Metric], side: str, round_no: int) -> Sample:
    """One measurement of one side: the pre-command, the timed command, the metrics.
    Raises :class:`MeasureError` with the failure to report."""
    cmd = config.cmd_a if side == "A" else config.cmd_b
    env = dict(os.environ, SWIOTLB_AB_SIDE=side, SWIOTLB_AB_ROUND=str(round_no))
    if config.pre:
        rc, out, err, _ = run_shell(config.pre, env, config.timeout_s)
        if rc != 0:
            what = "timed out" if rc is None else f"exited with status {rc}"
            raise MeasureError(Failure(round_no, side, "pre", f"the pre-command {what}", config.pre, rc,
                                       _tail(out), _tail(err)))
    rc, out, err, wall = run_shell(cmd, env, config.timeout_s)
    if rc is None:
        raise MeasureError(Failure(round_no, side, "timeout", f"timed out after {config.timeout_s:g} s", cmd,
                                   None, _tail(out), _tail(err)))
    if rc != 0:
        raise MeasureError(Failure(round_no, side, "exit", f"exited with status {rc}", cmd, rc,
                                   _tail(out), _tail(err)))
    output = Output(out, err, wall)
    values = {}
    for metric in metrics:
        try:
            values[metric.name] = metric.extract(output)
        except MetricError as exc:
            raise MeasureError(Failure(round_no, side, "metric", str(exc), cmd, rc, _tail(out), _tail(err))) from None
    return Sample(wall, values)


def _order(config: AbConfig, rng: np.random.Generator) -> str:
    if config.order == "random":
        return "AB" if rng.random() < 0.5 else "BA"
    return "AB"


def _round(config: AbConfig, metrics: Sequence[Metric], round_no: int, order: str) -> Round:
    got = {side: measure(config, metrics, side, round_no) for side in order}
    return Round(round_no, order, got["A"], got["B"])


ProgressFn = Callable[[AbRun, float], None]
"""Called after every measured round with the run and the seconds its measured rounds took."""


def run_ab(config: AbConfig, *, progress: ProgressFn | None = None,
           save: Callable[[AbRun], None] | None = None) -> AbRun:
    """Warm up, then measure rounds until the count or the budget is reached or a command fails.

    ``save`` is called after every round (and at the end), so a long run leaves its results on
    disk as it goes. A budget stops the run before a round that would probably overrun it (the
    mean round time so far predicts the next). Ctrl-C ends the run as a failure of kind
    ``interrupted``, keeping the rounds measured.
    """
    import numpy as np

    metrics = parse_metrics(config.metrics)
    rng = np.random.default_rng([config.seed, 0])
    run = AbRun(config, started=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    t0 = time.perf_counter()
    round_no = 0
    try:
        for w in range(config.warmup, 0, -1):
            round_no = -w
            _round(config, metrics, -w, _order(config, rng))
        t_measured = time.perf_counter()
        while config.rounds is None or len(run.rounds) < config.rounds:
            spent = time.perf_counter() - t_measured
            if config.budget_s is not None and run.rounds:
                if spent + spent / len(run.rounds) > config.budget_s:
                    break
            round_no = len(run.rounds) + 1
            run.rounds.append(_round(config, metrics, round_no, _order(config, rng)))
            run.elapsed_s = time.perf_counter() - t0
            if save is not None:
                save(run)
            if progress is not None:
                progress(run, time.perf_counter() - t_measured)
    except MeasureError as exc:
        run.failure = exc.failure
    except KeyboardInterrupt:
        run.failure = Failure(round_no, "", "interrupted", "interrupted (Ctrl-C)", "")
    run.elapsed_s = time.perf_counter() - t0
    if save is not None:
        save(run)
    return run


# --- analysis and the results file -------------------------------------------------------------


def analyses(run: AbRun) -> list[Analysis]:
    """One analysis per metric over the complete rounds, each with its own seeded generator."""
    import numpy as np

    from swiotlb.lab.abstats import analyze

    cfg = run.config
    out = []
    for i, name in enumerate(cfg.metrics):
        a = [r.a.values[name] for r in run.rounds]
        b = [r.b.values[name] for r in run.rounds]
        out.append(analyze(name, a, b, np.random.default_rng([cfg.seed, 1, i]), thresholds=cfg.thresholds,
                           n_resamples=cfg.n_resamples))
    return out


def result_object(run: AbRun) -> dict[str, Any]:
    """What ``--json`` prints: the first metric's analysis at the top level (rounds, metric,
    median_a, median_b, cov_a, cov_b, ratio, ci_low, ci_high, p_value, warnings, ...), every
    metric's under ``metrics``, and the failure (or None)."""
    every = [a.to_json() for a in analyses(run)]
    top = dict(every[0])
    top.update(metrics=every, failure=asdict(run.failure) if run.failure else None,
               order=run.config.order, seed=run.config.seed, warmup=run.config.warmup,
               confidence=1 - run.config.thresholds.alpha, elapsed_s=round(run.elapsed_s, 6))
    return top


def to_json(run: AbRun, result: dict[str, Any] | None = None) -> dict[str, Any]:
    """The results file's content."""
    return {
        "schema": SCHEMA,
        "config": asdict(run.config),
        "started": run.started,
        "elapsed_s": run.elapsed_s,
        "environment": {"python": platform.python_version(), "platform": platform.platform(),
                        "node": platform.node()},
        "rounds": [asdict(r) for r in run.rounds],
        "failure": asdict(run.failure) if run.failure else None,
        "result": result,
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write atomically (a temporary file renamed over the target), so a reader or a crash never
    sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def load_results(path: Path) -> dict[str, Any]:
    """A saved results file; anything else is a :class:`click.ClickException` naming the file."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise click.ClickException(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise click.ClickException(f"{path}: not a 'swiotlb bench ab' results file (schema {SCHEMA} expected)")
    if not isinstance(doc.get("result"), dict):
        raise click.ClickException(f"{path}: the run did not finish writing its result")
    return doc


# --- terminal output ---------------------------------------------------------------------------


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False) if stream.isatty() else Console(stderr=stderr, width=200,
                                                                                   highlight=False)


def _fmt(value: Any, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def print_report(doc: dict[str, Any]) -> None:
    """The results file as tables: per metric the medians, CoVs, the ratio with its interval, p
    and the rounds needed; then the warnings and the failure with its output."""
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    result = doc["result"]
    cfg = doc["config"]
    console.print(f"[bold]A[/bold]: {escape(cfg['cmd_a'])}")
    console.print(f"[bold]B[/bold]: {escape(cfg['cmd_b'])}")
    console.print(f"{result['rounds']} round(s), order {cfg['order']}, {cfg['warmup']} warm-up, seed {cfg['seed']}")
    level = f"{result.get('confidence', 0.95):.0%}"
    table = Table(title="B/A over paired rounds")
    for col in ("metric", "median A", "CoV A", "median B", "CoV B", "B/A", f"{level} CI", "p (Wilcoxon)",
                f"rounds for ±{result['effect']:.0%}"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for m in result["metrics"]:
        ci = "-" if m["ci_low"] is None else f"{m['ci_low']:.4f}–{m['ci_high']:.4f}"
        table.add_row(escape(m["metric"]), _fmt(m["median_a"]), _fmt(m["cov_a"], ".1%"), _fmt(m["median_b"]),
                      _fmt(m["cov_b"], ".1%"), _fmt(m["ratio"], ".4f"), ci, _fmt(m["p_value"], ".3g"),
                      _fmt(m["rounds_needed"], "d"))
    console.print(table)
    for m in result["metrics"]:
        for w in m["warnings"]:
            console.print(f"[yellow]warning[/yellow] {escape(m['metric'])}: {escape(w)}")
    failure = doc.get("failure")
    if failure:
        where = "warm-up" if failure["round"] < 0 else "round"
        console.print(f"[red]failed[/red] in {where} {abs(failure['round'])}, side {failure['side'] or '-'}: "
                      f"{escape(failure['message'])}")
        if failure["command"]:
            console.print(f"  command: {escape(failure['command'])}")
        for stream in ("stdout", "stderr"):
            if failure[stream]:
                console.print(f"  {stream}:")
                console.print(escape(failure[stream].rstrip()), soft_wrap=True)
        console.print(f"kept {result['rounds']} complete round(s)")


# --- click commands ----------------------------------------------------------------------------


def _default_out() -> Path:
    return Path(f"bench-ab-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json")


@click.command("ab")
@click.option("--a", "-a", "cmd_a", required=True, metavar="CMD", help="Side A: a shell command.")
@click.option("--b", "-b", "cmd_b", required=True, metavar="CMD", help="Side B: a shell command.")
@click.option("--metric", "-m", "metrics", multiple=True, metavar="SPEC",
              help="wall, regex:PATTERN, json:PATH or fio:[DIR.]STAT[@JOB] (e.g. fio:read.iops, "
                   "fio:read.clat_p99@0); repeat for several. Default: wall.")
@click.option("--regex", "regexes", multiple=True, metavar="PATTERN",
              help="Shorthand for --metric regex:PATTERN; the first capture group is the value.")
@click.option("--rounds", "-n", type=click.IntRange(min=1), default=None,
              help="Measured rounds (default 10 without --budget).")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Stop before a round that would take the measured rounds past this many seconds.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Warm-up rounds, run first and not counted.")
@click.option("--order", type=click.Choice(ORDERS), default="abab", show_default=True,
              help="abab: A first in every round; random: a seeded coin per round.")
@click.option("--pre", default=None, metavar="CMD", help="Run before every measurement (not timed).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Kill a command (and its children) after this long and stop the run.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the random order and the bootstrap.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Results file (JSON), rewritten after every round. Default: bench-ab-DATE-TIME.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the result object as JSON on stdout.")
@click.option("--cov-threshold", type=click.FloatRange(min=0, min_open=True), default=0.05, show_default=True,
              help="Warn when a side's coefficient of variation exceeds this.")
@click.option("--drift-threshold", type=click.FloatRange(min=0, min_open=True), default=0.05,
              show_default=True, help="Warn when a side's median moves more than this between halves.")
@click.option("--effect", type=click.FloatRange(min=0, min_open=True), default=0.05, show_default=True,
              help="The change (0.05 = 5%) the rounds-needed estimate is for.")
@click.option("--resamples", type=click.IntRange(min=100), default=9999, show_default=True,
              help="Bootstrap resamples.")
def ab_cmd(cmd_a: str, cmd_b: str, metrics: tuple[str, ...], regexes: tuple[str, ...], rounds: int | None,
           budget: float | None, warmup: int, order: str, pre: str | None, timeout: float | None, seed: int,
           out: Path | None, as_json: bool, cov_threshold: float, drift_threshold: float, effect: float,
           resamples: int) -> None:
    """Compare two commands in paired rounds: B/A with a confidence interval and a test.

    Each round runs A and B back to back; the report gives each side's median and CoV, the
    geometric mean of the per-round ratios B/A with a BCa bootstrap interval, the Wilcoxon
    signed-rank p, noise warnings and the rounds needed to see --effect. The commands see
    SWIOTLB_AB_SIDE (A or B) and SWIOTLB_AB_ROUND (1, 2, ...; negative in warm-ups).
    Exits 1 when a command failed (the rounds before it are kept and reported).
    """
    specs = tuple(metrics) + tuple(f"regex:{r}" for r in regexes)
    try:
        parse_metrics(specs or ("wall",))
    except MetricError as exc:
        raise click.BadParameter(str(exc), param_hint="--metric/--regex") from None
    config = AbConfig(cmd_a=cmd_a, cmd_b=cmd_b, metrics=specs or ("wall",),
                      rounds=rounds if rounds is not None or budget is not None else 10, budget_s=budget,
                      warmup=warmup, order=order, pre=pre, timeout_s=timeout, seed=seed,
                      cov_threshold=cov_threshold, drift_threshold=drift_threshold, effect=effect,
                      n_resamples=resamples)
    path = out if out is not None else _default_out()
    doc = _run_with_progress(config, path)
    if as_json:
        click.echo(json.dumps(doc["result"], indent=1, sort_keys=True))
    else:
        print_report(doc)
        click.echo(f"results: {path}", err=True)
    if doc["failure"]:
        sys.exit(1)


def _run_with_progress(config: AbConfig, path: Path) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    def save(run: AbRun) -> None:
        write_json(path, to_json(run))

    show = sys.stderr.isatty()
    columns = [TextColumn("paired rounds"), BarColumn(),
               MofNCompleteColumn() if config.rounds is not None else TextColumn("{task.completed:.0f} s"),
               TimeElapsedColumn()]
    with Progress(*columns, console=_console(stderr=True), transient=True, disable=not show) as bar:
        total = config.rounds if config.rounds is not None else config.budget_s
        task = bar.add_task("rounds", total=total)

        def progress(run: AbRun, spent: float) -> None:
            bar.update(task, completed=len(run.rounds) if config.rounds is not None else min(spent, total or spent))

        run = run_ab(config, progress=progress, save=save)
    doc = to_json(run, result_object(run))
    write_json(path, doc)
    return doc


@click.command("show")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result object as JSON on stdout.")
def show_cmd(file: Path, as_json: bool) -> None:
    """Print a saved 'bench ab' results file again."""
    doc = load_results(file)
    if as_json:
        click.echo(json.dumps(doc["result"], indent=1, sort_keys=True))
    else:
        print_report(doc)
