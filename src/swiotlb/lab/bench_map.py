"""``swiotlb bench map``: the kernel's ``dma_map_benchmark`` for this package's DMA API.

The kernel tool (kernel/dma/map_benchmark.c with tools/testing/selftests/dma/dma_map_benchmark.c,
spec §8) starts ``threads`` kernel threads; each owns one buffer of ``granule`` pages and, until
it is stopped after ``seconds``, stains the buffer with 0x66 (unless the direction is
FROM_DEVICE), times ``dma_map_single``, waits ``dma_trans_ns`` to pretend the device is
transferring, and times ``dma_unmap_single``. Each time is truncated to whole 100 ns units;
the sums and sums of squares over every thread's loops give the average and the standard
deviation in integer arithmetic, and the tool prints them divided by 10 as microseconds with
one decimal.

Here the same loop runs on a :class:`~swiotlb.Machine` with a bounce policy, so every map and
unmap is the package's own DMA API with real byte copies through the bounce slots:

* **What bounces.** ``--pool force`` (``swiotlb=force``) bounces every mapping. Without it the
  machine has RAM above 4 GiB (8 GiB by default), the buffers come from there, and the
  device's mask of ``dma_bits`` decides: a mask below the buffer bounces it, a 64-bit mask
  maps it directly. The report counts the maps that bounced (a bounced map's DMA address is
  not the buffer's physical address) and warns when none did.
* **Threads.** Python threads, thread *i* calling with ``cpu = i % cpus``, which selects the
  swiotlb area the search starts in, as the CPU does in the kernel. They share the GIL, so
  throughput does not scale with threads as the kernel's does; what the figures show is the
  package's own cost per call, and the contention structure (areas and their locks, pools)
  of the policy under interleaved callers.
* **Transmit delay.** A busy-wait on ``time.perf_counter_ns`` (the kernel's ``ndelay`` also
  spins). A spinning thread keeps the GIL until the interpreter's switch interval forces a
  hand-over, so a delay slows the other threads down, unlike in the kernel.
* **Timing.** ``time.perf_counter_ns`` around each call (``--clock wall``, the default, as the
  kernel's ``ktime_get``), or the thread's CPU time (``--clock cpu``), which leaves out the
  turns of the other threads a call waited through for the GIL: use it with several threads to
  see the cost per call. The kernel's integer statistics in 100 ns units give its three lines;
  ``--json`` adds the exact nanosecond mean, (population) standard deviation and maximum.
* **Failures.** A failed map is counted under its cause (``full``, ``too_large``,
  ``unaddressable``, ``no_pool``) and the thread goes on; its time is not in the averages.
  The kernel's thread stops at its first failure and the tool then prints an ioctl error.
  A granule above 64 pages (256 KiB) never fits a bounce buffer of the static pool.
* **Fixed loops.** ``loops`` runs exactly that many iterations per thread instead of a time,
  for deterministic tests; the header line still shows ``seconds`` as given.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import click

from swiotlb.core.constants import IO_TLB_SHIFT
from swiotlb.core.sizing import parse_size, parse_swiotlb_param
from swiotlb.dma import DmaDirection, DmaMappingError, Machine, dma_bit_mask
from swiotlb.dma.events import DmaEvent
from swiotlb.policies import POLICIES
from swiotlb.policies.config import ConfigError

__all__ = [
    "BenchOptionError",
    "DIRECTIONS",
    "MapBenchResult",
    "format_kernel_lines",
    "format_report",
    "kernel_stats",
    "map_cmd",
    "pool_cmdline",
    "run_map_benchmark",
    "validate_options",
]

# The kernel tool's limits (spec §8.1).
MAX_THREADS = 1024
MAX_SECONDS = 300
MAX_TRANS_DELAY_NS = 10 * 1_000_000
MAX_GRANULE = 1024
MIN_BITS, MAX_BITS = 20, 64
DIRECTIONS = ("BIDIRECTIONAL", "TO_DEVICE", "FROM_DEVICE")  # the tool's -d values 0, 1, 2
STAIN = 0x66
DEVICE_NAME = "dma_map_benchmark"
CLOCKS: dict[str, Callable[[], int]] = {"wall": time.perf_counter_ns, "cpu": time.thread_time_ns}


class BenchOptionError(ValueError):
    """An option out of the kernel tool's range; ``option`` names it as the command line spells it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


def validate_options(
    threads: int, seconds: int, granule: int, direction: int, dma_bits: int, delay_ns: int,
    node: int = -1, loops: int | None = None,
) -> None:
    """Reject what the kernel tool rejects, with its wording and the option's name."""
    if not 1 <= threads <= MAX_THREADS:
        raise BenchOptionError("-t/--threads", f"invalid number of threads, must be in 1-{MAX_THREADS} (got {threads})")
    if not 1 <= seconds <= MAX_SECONDS:
        raise BenchOptionError("-s/--seconds", f"invalid number of seconds, must be in 1-{MAX_SECONDS} (got {seconds})")
    if not 0 <= delay_ns <= MAX_TRANS_DELAY_NS:
        raise BenchOptionError("-x/--delay", f"invalid transmit delay, must be in 0-{MAX_TRANS_DELAY_NS} (got {delay_ns})")
    if not MIN_BITS <= dma_bits <= MAX_BITS:
        raise BenchOptionError("-b/--bits", f"invalid dma mask bit, must be in {MIN_BITS}-{MAX_BITS} (got {dma_bits})")
    if direction not in (0, 1, 2):
        raise BenchOptionError(
            "-d/--dir", f"invalid dma direction {direction} (0 BIDIRECTIONAL, 1 TO_DEVICE, 2 FROM_DEVICE)")
    if not 1 <= granule <= MAX_GRANULE:
        raise BenchOptionError("-g/--granule", f"invalid granule size, must be in 1-{MAX_GRANULE} pages (got {granule})")
    if node not in (-1, 0):
        raise BenchOptionError("-n/--node", f"invalid numa node {node}: the modelled machine has one node (use -1 or 0)")
    if loops is not None and loops < 1:
        raise BenchOptionError("--loops", f"must be at least 1 (got {loops})")


_SIZE_TOKEN = re.compile(r"^(\d+)([KMG])(I?B)?$", re.IGNORECASE)


def pool_cmdline(pool: str | None) -> str:
    """The ``swiotlb=`` word for ``--pool``: the kernel's syntax (``force``, ``65536``,
    ``65536,4,force``), or a leading size with a K/M/G suffix turned into slots (``128M`` ->
    ``65536``), which the kernel itself would misread. Empty for None."""
    if pool is None or not pool.strip():
        return ""
    text = pool.strip()
    if text.startswith("swiotlb="):
        text = text[len("swiotlb="):]
    head, sep, rest = text.partition(",")
    m = _SIZE_TOKEN.match(head)
    if m:
        nbytes = parse_size(m.group(1) + m.group(2))
        if nbytes < 1 << IO_TLB_SHIFT:
            raise BenchOptionError("--pool", f"{head!r} is smaller than one 2 KiB slot")
        text = str(nbytes >> IO_TLB_SHIFT) + sep + rest
    param = parse_swiotlb_param(text)
    if param.warnings:
        raise BenchOptionError("--pool", f"swiotlb={text}: " + "; ".join(param.warnings))
    return f"swiotlb={text}"


# -- statistics -----------------------------------------------------------------------------
def kernel_stats(total: int, total_sq: int, loops: int) -> tuple[int, int]:
    """(average, standard deviation) as the kernel computes them from sums of truncated samples."""
    if loops <= 0:
        return 0, 0
    avg = total // loops
    return avg, math.isqrt(total_sq // loops - avg * avg)


def _mean_std(total: int, total_sq: int, n: int) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 0.0
    mean = total / n
    var = max(0, total_sq * n - total * total) / (n * n)  # exact integers until the last division
    return mean, math.sqrt(var)


@dataclass
class _Acc:
    """One thread's sums (the kernel shares atomics; here each thread keeps its own)."""

    loops: int = 0
    map_ns: int = 0
    map_sq: int = 0
    unmap_ns: int = 0
    unmap_sq: int = 0
    map_100: int = 0
    map_100_sq: int = 0
    unmap_100: int = 0
    unmap_100_sq: int = 0
    map_max: int = 0
    unmap_max: int = 0
    bounced: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    error: BaseException | None = None


@dataclass
class MapBenchResult:
    """The figures of one run, and the settings that produced them."""

    settings: dict[str, Any]
    loops: int
    elapsed_s: float
    avg_map_100ns: int
    map_stddev_100ns: int
    avg_unmap_100ns: int
    unmap_stddev_100ns: int
    map_ns_avg: float
    map_ns_stddev: float
    unmap_ns_avg: float
    unmap_ns_stddev: float
    map_ns_max: int
    unmap_ns_max: int
    bounced_maps: int
    bounced_bytes: int
    copied_bytes: int
    failures: dict[str, int]
    counters: dict[str, int]
    machine: dict[str, Any]
    events: dict[str, int] | None = None

    @property
    def failure_count(self) -> int:
        return sum(self.failures.values())

    @property
    def maps_per_s(self) -> float:
        return self.loops / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def bytes_per_s(self) -> float:
        """Bytes of bounced mappings per second (each bounced map counts its size once)."""
        return self.bounced_bytes / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "loops": self.loops,
            "elapsed_s": self.elapsed_s,
            "avg_map_100ns": self.avg_map_100ns,
            "map_stddev_100ns": self.map_stddev_100ns,
            "avg_unmap_100ns": self.avg_unmap_100ns,
            "unmap_stddev_100ns": self.unmap_stddev_100ns,
            "map_ns_avg": self.map_ns_avg,
            "map_ns_stddev": self.map_ns_stddev,
            "unmap_ns_avg": self.unmap_ns_avg,
            "unmap_ns_stddev": self.unmap_ns_stddev,
            "map_ns_max": self.map_ns_max,
            "unmap_ns_max": self.unmap_ns_max,
            "maps_per_s": self.maps_per_s,
            "bytes_per_s": self.bytes_per_s,
            "copied_bytes_per_s": self.copied_bytes / self.elapsed_s if self.elapsed_s > 0 else 0.0,
            "bounced_maps": self.bounced_maps,
            "bounced_bytes": self.bounced_bytes,
            "copied_bytes": self.copied_bytes,
            "failures": self.failure_count,
            "failure_causes": dict(sorted(self.failures.items())),
            "counters": self.counters,
            "machine": self.machine,
            "events": self.events,
        }


# -- the run --------------------------------------------------------------------------------
def run_map_benchmark(
    threads: int = 1,
    seconds: int = 20,
    granule: int = 1,
    direction: int = 0,
    dma_bits: int = 32,
    delay_ns: int = 0,
    policy: str = "static",
    policy_options: Mapping[str, Any] | None = None,
    ram: int | str = "8G",
    cpus: int | None = None,
    *,
    pool: str | None = None,
    loops: int | None = None,
    node: int = -1,
    profile: str = "v6.12",
    page_size: int = 4096,
    count_events: bool = False,
    switch_interval_us: float | None = None,
    clock: str = "wall",
    on_machine: Callable[[Machine], None] | None = None,
) -> MapBenchResult:
    """Run the map/unmap loop of ``dma_map_benchmark`` on a fresh machine (module docstring).

    ``pool`` is ``--pool`` (see :func:`pool_cmdline`); ``policy``/``policy_options`` choose the
    bounce design and its knobs; ``cpus`` defaults to ``threads``, so each thread has its own
    CPU (and, as in the kernel, the pool gets one area per CPU). ``loops`` fixes the iterations
    per thread instead of running for ``seconds``. ``count_events`` subscribes a counter to the
    machine's tracepoints (it adds the cost of an enabled tracepoint to every call).
    ``switch_interval_us`` sets the interpreter's thread switch interval for the run
    (``sys.setswitchinterval``; Python's default is 5000 µs); a map that loses the GIL mid-call
    is timed with the other threads' turns in it, so a shorter interval bounds that wait.
    ``clock`` is ``"wall"`` (``time.perf_counter_ns``, like the kernel's ``ktime_get``) or
    ``"cpu"`` (``time.thread_time_ns``: the calling thread's CPU time, which leaves out the time
    it waited for the GIL or for a CPU; each reading costs more, about 0.6 µs here).
    ``on_machine`` is called with the machine before the threads start (tests use it to watch
    the copies).
    """
    validate_options(threads, seconds, granule, direction, dma_bits, delay_ns, node, loops)
    if switch_interval_us is not None and not 1 <= switch_interval_us <= 1_000_000:
        raise BenchOptionError("--switch-us", f"must be in 1-1000000 µs (got {switch_interval_us})")
    if clock not in CLOCKS:
        raise BenchOptionError("--clock", f"unknown clock {clock!r}; known: {', '.join(CLOCKS)}")
    ncpus = threads if cpus is None else cpus
    if ncpus < 1:
        raise BenchOptionError("--cpus", f"must be at least 1 (got {ncpus})")
    if policy not in POLICIES:
        raise BenchOptionError("--policy", f"unknown policy {policy!r}; known: {', '.join(sorted(POLICIES))}")
    words = [pool_cmdline(pool), f"swiotlb.policy={policy}"]
    cmdline = " ".join(w for w in words if w)
    machine = Machine(ram=ram, cpus=ncpus, cmdline=cmdline, profile=profile, page_size=page_size,
                      policy_options=dict(policy_options or {}))
    dev = machine.add_device(DEVICE_NAME, dma_mask=dma_bit_mask(dma_bits))
    d = DmaDirection(direction)
    size = granule * page_size
    events: Counter[str] | None = None
    if count_events:
        events = Counter()
        ev = events

        def count(event: DmaEvent) -> None:
            ev[event.name] += 1

        machine.events.subscribe(count)
    if on_machine is not None:
        on_machine(machine)
    buffers = [machine.alloc(size) for _ in range(threads)]  # alloc_pages_exact, one per thread
    accs = [_Acc() for _ in range(threads)]
    stop = threading.Event()
    start = threading.Barrier(threads + 1)

    def worker(i: int) -> None:
        acc = accs[i]
        try:
            _loop(machine, dev.map_single, dev.unmap, buffers[i].phys_addr, size, d, i % ncpus,
                  delay_ns, loops, stop, start, acc, CLOCKS[clock])
        except BaseException as exc:  # reported after the join, the other threads stop too
            acc.error = exc
            stop.set()
            start.abort()  # a thread that failed before the start must not leave the others waiting

    workers = [threading.Thread(target=worker, args=(i,), name=f"dma-map-benchmark/{i}", daemon=True)
               for i in range(threads)]
    old_interval = sys.getswitchinterval()
    if switch_interval_us is not None:
        sys.setswitchinterval(switch_interval_us / 1e6)
    try:
        for t in workers:
            t.start()
        try:
            start.wait()
        except threading.BrokenBarrierError:
            pass  # a worker failed; its error is raised below
        t0 = time.perf_counter()
        if loops is None:
            stop.wait(seconds)
            stop.set()
        for t in workers:
            t.join()
        elapsed = time.perf_counter() - t0
    finally:
        sys.setswitchinterval(old_interval)
    for acc in accs:
        if acc.error is not None:
            raise acc.error
    for buf in buffers:
        buf.free()
    return _result(machine, accs, elapsed, size, d, dict(
        threads=threads, seconds=seconds, node=node, dir=DIRECTIONS[direction], direction=direction,
        granule=granule, dma_bits=dma_bits, delay_ns=delay_ns, policy=policy,
        policy_options=dict(policy_options or {}), pool=pool, ram=ram, cpus=ncpus, loops=loops,
        profile=profile, page_size=page_size, cmdline=cmdline,
        clock=clock, switch_interval_us=switch_interval_us if switch_interval_us is not None else old_interval * 1e6,
    ), events)


def _loop(
    machine: Machine, map_single: Callable[..., int], unmap: Callable[..., None], phys: int, size: int,
    d: DmaDirection, cpu: int, delay_ns: int, loops: int | None, stop: threading.Event,
    start: threading.Barrier, acc: _Acc, clock: Callable[[], int],
) -> None:
    """One benchmark thread; the hot loop keeps everything in locals."""
    wall = time.perf_counter_ns
    fill = machine.memory.fill
    stain = d is not DmaDirection.FROM_DEVICE
    stopped = stop.is_set
    n = m_ns = m_sq = u_ns = u_sq = m100 = m100_sq = u100 = u100_sq = bounced = m_max = u_max = 0
    failures = acc.failures
    remaining = loops if loops is not None else -1
    try:
        start.wait()
    except threading.BrokenBarrierError:
        return
    try:
        while remaining and not stopped():
            remaining -= 1
            if stain:
                fill(phys, size, STAIN)
            t0 = clock()
            try:
                dma = map_single(phys, size, d, cpu=cpu)
            except DmaMappingError as exc:
                failures[exc.cause] += 1
                continue
            t1 = clock()
            if delay_ns:  # ndelay: spin on the wall clock whatever clock times the calls
                until = wall() + delay_ns
                while wall() < until:
                    pass
            t2 = clock()
            unmap(dma, size, d, cpu=cpu)
            t3 = clock()
            a = t1 - t0
            b = t3 - t2
            m_ns += a
            m_sq += a * a
            u_ns += b
            u_sq += b * b
            if a > m_max:
                m_max = a
            if b > u_max:
                u_max = b
            a //= 100
            b //= 100
            m100 += a
            m100_sq += a * a
            u100 += b
            u100_sq += b * b
            n += 1
            if dma != phys:
                bounced += 1
    finally:
        acc.loops, acc.map_ns, acc.map_sq, acc.unmap_ns, acc.unmap_sq = n, m_ns, m_sq, u_ns, u_sq
        acc.map_100, acc.map_100_sq, acc.unmap_100, acc.unmap_100_sq = m100, m100_sq, u100, u100_sq
        acc.bounced, acc.map_max, acc.unmap_max = bounced, m_max, u_max


def _result(
    machine: Machine, accs: list[_Acc], elapsed: float, size: int, d: DmaDirection,
    settings: dict[str, Any], events: Counter[str] | None,
) -> MapBenchResult:
    loops = sum(a.loops for a in accs)
    avg_map, std_map = kernel_stats(sum(a.map_100 for a in accs), sum(a.map_100_sq for a in accs), loops)
    avg_unmap, std_unmap = kernel_stats(sum(a.unmap_100 for a in accs), sum(a.unmap_100_sq for a in accs), loops)
    map_mean, map_std = _mean_std(sum(a.map_ns for a in accs), sum(a.map_sq for a in accs), loops)
    unmap_mean, unmap_std = _mean_std(sum(a.unmap_ns for a in accs), sum(a.unmap_sq for a in accs), loops)
    bounced = sum(a.bounced for a in accs)
    failures: Counter[str] = Counter()
    for a in accs:
        failures.update(a.failures)
    # what the DMA API copies for a bounced map and its unmap (spec §4.2; no SKIP_CPU_SYNC here)
    copy_in = machine.dma.always_copy_on_map or d is not DmaDirection.FROM_DEVICE
    copy_out = d is not DmaDirection.TO_DEVICE
    copied = bounced * size * (int(copy_in) + int(copy_out))
    pool = machine.pool
    info: dict[str, Any] = {
        "ram_bytes": machine.memory.size,
        "cpus": machine.cpus,
        "profile": machine.profile.name,
        "force_bounce": machine.mem.force_bounce,
        "pool_start": pool.start if pool else None,
        "pool_nslabs": pool.nslabs if pool else 0,
        "pool_nareas": pool.nareas if pool else 0,
        "device_dma_mask": machine.devices[DEVICE_NAME].dma_mask,
    }
    return MapBenchResult(
        settings=settings, loops=loops, elapsed_s=elapsed,
        avg_map_100ns=avg_map, map_stddev_100ns=std_map, avg_unmap_100ns=avg_unmap, unmap_stddev_100ns=std_unmap,
        map_ns_avg=map_mean, map_ns_stddev=map_std, unmap_ns_avg=unmap_mean, unmap_ns_stddev=unmap_std,
        map_ns_max=max((a.map_max for a in accs), default=0), unmap_ns_max=max((a.unmap_max for a in accs), default=0),
        bounced_maps=bounced, bounced_bytes=bounced * size, copied_bytes=copied,
        failures=dict(failures), counters=dict(machine.stats), machine=info,
        events=dict(sorted(events.items())) if events is not None else None,
    )


# -- output ---------------------------------------------------------------------------------
def format_kernel_lines(threads: int, seconds: int, node: int, direction: int, granule: int,
                        avg_map_100ns: int, map_stddev: int, avg_unmap_100ns: int, unmap_stddev: int) -> list[str]:
    """The tool's three lines: the settings, then map and unmap latency in µs with one decimal."""
    return [
        f"dma mapping benchmark: threads:{threads} seconds:{seconds} node:{node} "
        f"dir:{DIRECTIONS[direction]} granule: {granule}",
        f"average map latency(us):{avg_map_100ns / 10.0:.1f} standard deviation:{map_stddev / 10.0:.1f}",
        f"average unmap latency(us):{avg_unmap_100ns / 10.0:.1f} standard deviation:{unmap_stddev / 10.0:.1f}",
    ]


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB/s"


def format_report(r: MapBenchResult) -> tuple[list[str], list[str]]:
    """(lines for standard output, warnings for standard error)."""
    s = r.settings
    out = format_kernel_lines(s["threads"], s["seconds"], s["node"], s["direction"], s["granule"],
                              r.avg_map_100ns, r.map_stddev_100ns, r.avg_unmap_100ns, r.unmap_stddev_100ns)
    mode = f"{s['loops']} loops per thread" if s["loops"] is not None else f"{s['seconds']} s"
    mode += f", {s['clock']} clock"
    out.append(
        f"loops:{r.loops} ({mode}, {r.elapsed_s:.3f} s) throughput: {r.maps_per_s:.0f} maps/s, "
        f"bounced {_mb(r.bytes_per_s)}, copied {_mb(r.copied_bytes / r.elapsed_s if r.elapsed_s > 0 else 0.0)}"
    )
    fails = ", ".join(f"{k} {v}" for k, v in sorted(r.failures.items())) or "none"
    out.append(f"bounced maps:{r.bounced_maps} of {r.loops} failures:{r.failure_count} ({fails})")
    m = r.machine
    if m["pool_nslabs"]:
        areas = m["pool_nareas"]
        where = (f"pool {m['pool_nslabs']} slots ({(m['pool_nslabs'] << IO_TLB_SHIFT) >> 20} MiB) in "
                 f"{areas} area{'' if areas == 1 else 's'} at {m['pool_start']:#x}")
    else:
        where = "no boot pool"
    why = "force" if m["force_bounce"] else f"dma_bits {s['dma_bits']}"
    out.append(f"swiotlb: policy {s['policy']}, {where}, bounce by {why}, cpus {m['cpus']}, "
               f"profile {m['profile']}" + (f", {s['cmdline']}" if s["cmdline"] else ""))
    if r.counters:
        out.append("debugfs: " + " ".join(f"{k}={v}" for k, v in r.counters.items()))
    if r.events is not None:
        out.append("tracepoints: " + (" ".join(f"{k}={v}" for k, v in r.events.items()) or "none"))
    warnings = []
    if r.loops and not r.bounced_maps:
        warnings.append(
            "warning: no map bounced; this measured the direct path (use --pool force, or a smaller -b "
            "so the buffers above 4 GiB are out of the device's reach)")
    if not r.loops:
        warnings.append("warning: every map failed; no latency was measured")
    return out, warnings


def _knobs(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        key, eq, val = v.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{v!r} is not KNOB=VALUE", param_hint="'-o' / '--knob'")
        out[key.strip()] = val.strip()
    return out


def _options_from_cmdline(policy: str, raw: dict[str, str]) -> dict[str, Any]:
    """Knob values typed as ``swiotlb.KNOB=VALUE`` would type them."""
    from swiotlb.policies.config import BounceConfig

    words = " ".join([f"swiotlb.policy={policy}", *(f"swiotlb.{k}={v}" for k, v in raw.items())])
    return dict(BounceConfig.from_cmdline(words).options)


_HINTS = {
    "-t/--threads": "'-t' / '--threads'", "-s/--seconds": "'-s' / '--seconds'", "-g/--granule": "'-g' / '--granule'",
    "-d/--dir": "'-d' / '--dir'", "-b/--bits": "'-b' / '--bits'", "-x/--delay": "'-x' / '--delay'",
    "-n/--node": "'-n' / '--node'", "--loops": "'--loops'", "--switch-us": "'--switch-us'", "--pool": "'--pool'", "--cpus": "'--cpus'",
    "--policy": "'-p' / '--policy'", "--clock": "'--clock'",
}


@click.command("map", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-t", "--threads", type=int, default=1, show_default=True, help="Threads mapping and unmapping (1-1024).")
@click.option("-s", "--seconds", type=int, default=20, show_default=True, help="How long to run (1-300).")
@click.option("-n", "--node", type=int, default=-1, show_default=True,
              help="NUMA node (the model has one: -1 or 0; printed in the header).")
@click.option("-b", "--bits", "dma_bits", type=int, default=32, show_default=True,
              help="The device's DMA mask in bits (20-64); buffers above it bounce.")
@click.option("-d", "--dir", "direction", type=int, default=0, show_default=True,
              help="0 BIDIRECTIONAL, 1 TO_DEVICE, 2 FROM_DEVICE.")
@click.option("-x", "--delay", "delay_ns", type=int, default=0, show_default=True,
              help="Transmit delay between map and unmap, in ns (0-10000000; a busy-wait).")
@click.option("-g", "--granule", type=int, default=1, show_default=True, help="Buffer size in pages (1-1024).")
@click.option("-p", "--policy", default="static", show_default=True,
              help=f"Bounce policy: {', '.join(sorted(POLICIES))}.")
@click.option("-o", "--knob", "knobs", multiple=True, metavar="KNOB=VALUE",
              help="A knob of the policy, as swiotlb.KNOB=VALUE would set it (repeatable).")
@click.option("--pool", default=None, metavar="SWIOTLB",
              help="The swiotlb= value: force, SLOTS[,AREAS][,force], or a size such as 128M[,force].")
@click.option("--ram", default="8G", show_default=True, help="The machine's RAM (above 4 GiB puts the buffers high).")
@click.option("--cpus", type=int, default=None, help="The machine's CPUs (default: one per thread).")
@click.option("--profile", default="v6.12", show_default=True, help="Kernel generation of the allocator rules.")
@click.option("--loops", type=int, default=None, help="Run exactly N loops per thread instead of --seconds.")
@click.option("--switch-us", "switch_interval_us", type=float, default=None,
              help="Python's thread switch interval in µs for the run (default 5000): a map that loses "
                   "the GIL is timed with the other threads' turns in it.")
@click.option("--clock", type=click.Choice(sorted(CLOCKS)), default="wall", show_default=True,
              help="wall: elapsed time, as the kernel measures; cpu: the thread's CPU time, without "
                   "the time it waited for the GIL (each reading costs about 0.6 µs more).")
@click.option("--events", "count_events", is_flag=True,
              help="Count the tracepoints (swiotlb_bounced, dma_map_page, ...); adds their cost to each call.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def map_cmd(threads: int, seconds: int, node: int, dma_bits: int, direction: int, delay_ns: int, granule: int,
            policy: str, knobs: tuple[str, ...], pool: str | None, ram: str, cpus: int | None, profile: str,
            loops: int | None, switch_interval_us: float | None, clock: str, count_events: bool,
            as_json: bool) -> None:
    """The kernel's dma_map_benchmark on this package's DMA API: THREADS threads map and unmap a
    buffer of GRANULE pages with real bounce copies, and the average map and unmap latency with
    their standard deviation are printed as the kernel tool prints them, then throughput,
    bounced maps and failures.

    \b
    swiotlb bench map -t 4 -s 10 -g 1 --pool force
    swiotlb bench map -b 32 -d 1 -g 16 --policy adaptive --loops 10000 --json
    """
    import json

    try:
        validate_options(threads, seconds, granule, direction, dma_bits, delay_ns, node, loops)
        pool_cmdline(pool)
    except BenchOptionError as exc:
        raise click.BadParameter(exc.message, param_hint=_HINTS.get(exc.option, exc.option)) from None
    if policy not in POLICIES:
        raise click.BadParameter(f"unknown policy {policy!r}; known: {', '.join(sorted(POLICIES))}",
                                 param_hint="'-p' / '--policy'")
    try:
        options = _options_from_cmdline(policy, _knobs(knobs))
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="'-o' / '--knob'") from None
    try:
        parse_size(ram)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--ram'") from None
    try:
        result = run_map_benchmark(
            threads, seconds, granule, direction, dma_bits, delay_ns, policy, options, ram, cpus,
            pool=pool, loops=loops, node=node, profile=profile, count_events=count_events,
            switch_interval_us=switch_interval_us, clock=clock,
        )
    except BenchOptionError as exc:
        raise click.BadParameter(exc.message, param_hint=_HINTS.get(exc.option, exc.option)) from None
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_json(), sort_keys=True, indent=1))
        return
    lines, warnings = format_report(result)
    for line in lines:
        click.echo(line)
    for w in warnings:
        click.echo(w, err=True)
