"""``swiotlb bench map``: the kernel's dma_map_benchmark on the package's DMA API."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from swiotlb import Machine
from swiotlb.dma.events import DmaEvent, DmaMapPage, SwiotlbBounced
from swiotlb.lab.bench_map import (
    BenchOptionError,
    format_kernel_lines,
    kernel_stats,
    map_cmd,
    pool_cmdline,
    run_map_benchmark,
)

PAGE = 4096
HEADER = re.compile(
    r"^dma mapping benchmark: threads:(\d+) seconds:(\d+) node:(-?\d+) "
    r"dir:(BIDIRECTIONAL|TO_DEVICE|FROM_DEVICE) granule: (\d+)$"
)
MAP_LINE = re.compile(r"^average map latency\(us\):(\d+\.\d) standard deviation:(\d+\.\d)$")
UNMAP_LINE = re.compile(r"^average unmap latency\(us\):(\d+\.\d) standard deviation:(\d+\.\d)$")


def invoke(*args: str) -> Any:
    return CliRunner().invoke(map_cmd, list(args))


# -- the kernel tool's layout and arithmetic ------------------------------------------------
def test_kernel_lines_have_the_tools_layout_and_units() -> None:
    lines = format_kernel_lines(1, 20, -1, 0, 1, 7, 3, 12, 0)
    assert lines == [
        "dma mapping benchmark: threads:1 seconds:20 node:-1 dir:BIDIRECTIONAL granule: 1",
        "average map latency(us):0.7 standard deviation:0.3",
        "average unmap latency(us):1.2 standard deviation:0.0",
    ]
    assert format_kernel_lines(8, 300, 0, 2, 64, 1234, 56, 0, 0)[0] == (
        "dma mapping benchmark: threads:8 seconds:300 node:0 dir:FROM_DEVICE granule: 64"
    )
    assert format_kernel_lines(8, 300, 0, 1, 64, 1234, 56, 0, 0)[1] == (
        "average map latency(us):123.4 standard deviation:5.6"
    )


def test_kernel_statistics_are_integer_100ns_arithmetic() -> None:
    # samples 1 and 3 (x 100 ns): mean 2, E[x^2] = 5, variance 1
    assert kernel_stats(1 + 3, 1 + 9, 2) == (2, 1)
    # floor everywhere: samples 1, 2 -> mean 1 (not 1.5), E[x^2] = 2, variance 2 - 1 = 1
    assert kernel_stats(3, 5, 2) == (1, 1)
    # samples 2, 3, 9 -> mean 4, E[x^2] = 94 // 3 = 31, variance 15, isqrt 3
    assert kernel_stats(14, 94, 3) == (4, 3)
    assert kernel_stats(0, 0, 0) == (0, 0)


def test_cli_prints_the_kernel_lines_then_throughput() -> None:
    res = invoke("-t", "2", "-g", "2", "-d", "1", "--loops", "30", "--pool", "force")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    head = HEADER.match(lines[0])
    assert head is not None and head.groups() == ("2", "20", "-1", "TO_DEVICE", "2")
    assert MAP_LINE.match(lines[1]) and UNMAP_LINE.match(lines[2])
    assert re.match(r"^loops:60 \(30 loops per thread, wall clock, [\d.]+ s\) throughput: \d+ maps/s, bounced [\d.]+ MB/s, "
                    r"copied [\d.]+ MB/s$", lines[3]), lines[3]
    assert lines[4] == "bounced maps:60 of 60 failures:0 (none)"
    assert "policy static" in lines[5] and "bounce by force" in lines[5] and "2 areas" in lines[5]
    assert lines[6].startswith("debugfs: io_tlb_nslabs=32768 io_tlb_used=0 io_tlb_used_hiwater=")
    assert res.stderr == ""


def test_result_matches_the_kernel_formula_from_the_same_sums() -> None:
    r = run_map_benchmark(loops=50, pool="force")
    lines = format_kernel_lines(1, 20, -1, 0, 1, r.avg_map_100ns, r.map_stddev_100ns,
                                r.avg_unmap_100ns, r.unmap_stddev_100ns)
    shown = float(MAP_LINE.match(lines[1]).group(1))  # type: ignore[union-attr]
    assert shown == round(r.avg_map_100ns / 10, 1)
    # samples are truncated to 100 ns, then the mean is floored: within two units of the exact mean
    assert r.avg_map_100ns * 100 <= r.map_ns_avg < (r.avg_map_100ns + 2) * 100
    assert r.avg_unmap_100ns * 100 <= r.unmap_ns_avg < (r.avg_unmap_100ns + 2) * 100
    assert r.map_ns_max >= r.map_ns_avg > 0 and r.unmap_ns_max >= r.unmap_ns_avg > 0


# -- real bounce copies ---------------------------------------------------------------------
class CopyWatch:
    """Counts the bytes the machine's memory really copies, and checks what the device sees."""

    def __init__(self) -> None:
        self.bytes = 0
        self.calls = 0
        self.stained_maps = 0
        self.bounced: list[SwiotlbBounced] = []
        self.machine: Machine | None = None

    def __call__(self, machine: Machine) -> None:
        self.machine = machine
        memory = machine.memory
        watch = self

        class Watched:
            """The DMA engine's view of memory: every call passes through, copies are counted."""

            def __getattr__(self, name: str) -> Any:
                return getattr(memory, name)

            def copy(self, dst: int, src: int, n: int) -> None:
                watch.bytes += n
                watch.calls += 1
                memory.copy(dst, src, n)

        machine.dma.memory = Watched()  # type: ignore[assignment]

        def on_event(event: DmaEvent) -> None:
            if isinstance(event, SwiotlbBounced):
                self.bounced.append(event)
            elif isinstance(event, DmaMapPage) and event.dma_addr != event.phys_addr:
                if memory.read(event.dma_addr, event.size) == b"\x66" * event.size:
                    self.stained_maps += 1

        machine.events.subscribe(on_event)


@pytest.mark.parametrize(
    ("direction", "profile", "copies_per_loop"),
    [
        (1, "v6.12", 1),  # TO_DEVICE: copy in at map only
        (2, "v6.12", 2),  # FROM_DEVICE: >= 5.18 copies in at map too, then back at unmap
        (0, "v6.12", 2),  # BIDIRECTIONAL: both
        (2, "v5.15", 1),  # FROM_DEVICE before 5.18: copy back at unmap only
    ],
)
def test_bytes_really_bounce(direction: int, profile: str, copies_per_loop: int) -> None:
    watch = CopyWatch()
    r = run_map_benchmark(granule=3, direction=direction, loops=40, pool="force", profile=profile, on_machine=watch)
    size = 3 * PAGE
    assert r.loops == 40 and r.bounced_maps == 40 and r.failure_count == 0
    assert watch.bytes == r.copied_bytes == 40 * size * copies_per_loop
    assert r.bounced_bytes == 40 * size
    assert len(watch.bounced) == 40 and all(e.force for e in watch.bounced)
    if direction != 2:  # the 0x66 stain reached the bounce buffer the device reads
        assert watch.stained_maps == 40
    assert r.counters["io_tlb_used"] == 0
    assert r.counters.get("io_tlb_used_hiwater", 6) == 6  # 3 pages = 6 slots; no hiwater before 6.5


def test_32_bit_mask_bounces_buffers_above_4g_without_force() -> None:
    watch = CopyWatch()
    r = run_map_benchmark(dma_bits=32, direction=1, loops=25, ram="8G", on_machine=watch)
    assert r.machine["force_bounce"] is False
    assert r.bounced_maps == 25 and watch.bytes == 25 * PAGE
    assert watch.bounced and not any(e.force for e in watch.bounced)  # NORMAL, not FORCE
    assert all(e.dev_addr >= 1 << 32 for e in watch.bounced)  # the buffer sits above the mask


def test_64_bit_mask_maps_directly_and_warns() -> None:
    r = run_map_benchmark(dma_bits=64, loops=10)
    assert r.loops == 10 and r.bounced_maps == 0 and r.copied_bytes == 0
    res = invoke("-b", "64", "--loops", "10")
    assert res.exit_code == 0
    assert "bounced maps:0 of 10" in res.stdout
    assert "no map bounced" in res.stderr


def test_events_count_the_tracepoints() -> None:
    r = run_map_benchmark(loops=12, pool="force", count_events=True)
    assert r.events == {"dma_map_page": 12, "dma_unmap_page": 12, "swiotlb_bounced": 12}


def test_failures_are_counted_by_cause() -> None:
    r = run_map_benchmark(granule=65, loops=5, pool="force")  # 260 KiB > 256 KiB
    assert r.loops == 0 and r.failures == {"too_large": 5}
    r = run_map_benchmark(dma_bits=20, loops=5)  # the pool below 4 GiB is beyond a 20-bit mask
    assert r.loops == 0 and r.failures == {"unaddressable": 5}
    res = invoke("-b", "20", "--loops", "3", "--json")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert data["failures"] == 3 and data["failure_causes"] == {"unaddressable": 3}


# -- options --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "option", "text"),
    [
        (["-t", "0"], "'-t' / '--threads'", "must be in 1-1024"),
        (["--threads", "1025"], "'-t' / '--threads'", "must be in 1-1024"),
        (["-s", "0"], "'-s' / '--seconds'", "must be in 1-300"),
        (["-s", "301"], "'-s' / '--seconds'", "must be in 1-300"),
        (["-g", "0"], "'-g' / '--granule'", "invalid granule size"),
        (["-g", "1025"], "'-g' / '--granule'", "invalid granule size"),
        (["-b", "19"], "'-b' / '--bits'", "must be in 20-64"),
        (["-b", "65"], "'-b' / '--bits'", "must be in 20-64"),
        (["-d", "3"], "'-d' / '--dir'", "invalid dma direction"),
        (["-d", "-1"], "'-d' / '--dir'", "invalid dma direction"),
        (["-x", "-1"], "'-x' / '--delay'", "must be in 0-10000000"),
        (["-x", "10000001"], "'-x' / '--delay'", "must be in 0-10000000"),
        (["-n", "3"], "'-n' / '--node'", "invalid numa node"),
        (["--loops", "0"], "'--loops'", "at least 1"),
        (["--policy", "nope"], "'-p' / '--policy'", "unknown policy 'nope'"),
        (["-p", "adaptive", "-o", "nope=1"], "'-o' / '--knob'", "no such knob"),
        (["-o", "idle_ns"], "'-o' / '--knob'", "is not KNOB=VALUE"),
        (["--pool", "force,65536"], "'--pool'", "swiotlb=force,65536"),
        (["--switch-us", "0"], "'--switch-us'", "must be in 1-1000000"),
        (["--clock", "tsc"], "'--clock'", "'tsc' is not one of"),
    ],
)
def test_invalid_options_name_the_option(args: list[str], option: str, text: str) -> None:
    res = invoke(*args)
    assert res.exit_code == 2, res.output
    assert f"Invalid value for {option}" in res.output and text in res.output


def test_function_validates_too() -> None:
    with pytest.raises(BenchOptionError) as err:
        run_map_benchmark(threads=2000)
    assert err.value.option == "-t/--threads"
    with pytest.raises(BenchOptionError, match="--policy"):
        run_map_benchmark(policy="nope", loops=1)
    with pytest.raises(BenchOptionError, match="--clock"):
        run_map_benchmark(clock="tsc", loops=1)


def test_pool_option_syntax() -> None:
    assert pool_cmdline(None) == ""
    assert pool_cmdline("force") == "swiotlb=force"
    assert pool_cmdline("65536,4,force") == "swiotlb=65536,4,force"
    assert pool_cmdline("128M") == "swiotlb=65536"
    assert pool_cmdline("2M,force") == "swiotlb=1024,force"
    r = run_map_benchmark(loops=3, pool="2M,force")
    assert r.counters["io_tlb_nslabs"] == 1024 and r.machine["force_bounce"] is True


# -- deterministic loops, threads, policies -------------------------------------------------
def test_loops_mode_is_deterministic() -> None:
    a = run_map_benchmark(loops=40, granule=2, direction=0, pool="force", count_events=True)
    b = run_map_benchmark(loops=40, granule=2, direction=0, pool="force", count_events=True)
    keys = ("loops", "bounced_maps", "bounced_bytes", "copied_bytes", "failures", "counters", "events", "settings",
            "machine")
    ja, jb = a.to_json(), b.to_json()
    assert {k: ja[k] for k in keys} == {k: jb[k] for k in keys}
    assert ja["loops"] == 40 and ja["copied_bytes"] == 40 * 2 * PAGE * 2


def test_json_has_the_agreed_keys() -> None:
    res = invoke("--loops", "20", "--pool", "force", "--json")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    for key in ("map_ns_avg", "map_ns_stddev", "unmap_ns_avg", "unmap_ns_stddev", "loops", "maps_per_s",
                "bytes_per_s", "failures"):
        assert key in data
    assert data["loops"] == 20 and data["failures"] == 0 and data["bytes_per_s"] > 0 and data["maps_per_s"] > 0
    assert data["avg_map_100ns"] * 100 <= data["map_ns_avg"] + 100


def test_threads_share_the_machine_and_use_their_own_areas() -> None:
    watch = CopyWatch()
    r = run_map_benchmark(threads=4, loops=100, pool="force", direction=1, on_machine=watch)
    assert r.loops == 400 and r.bounced_maps == 400 and watch.bytes == 400 * PAGE
    assert r.machine["pool_nareas"] == 4 and r.machine["cpus"] == 4
    assert {e.cpu for e in watch.bounced} == {0, 1, 2, 3}
    assert r.counters["io_tlb_used"] == 0
    assert watch.machine is not None and not watch.machine.devices["dma_map_benchmark"].live_mappings()


def test_cpu_clock_times_the_calls_too() -> None:
    r = run_map_benchmark(threads=2, loops=50, pool="force", clock="cpu")
    assert r.loops == 100 and r.map_ns_avg > 0 and r.settings["clock"] == "cpu"
    res = invoke("--clock", "cpu", "--loops", "5", "--pool", "force")
    assert res.exit_code == 0 and "cpu clock" in res.stdout


def test_seconds_mode_runs_for_the_wall_time() -> None:
    before = sys.getswitchinterval()
    r = run_map_benchmark(threads=2, seconds=1, pool="force", delay_ns=2000, switch_interval_us=200)
    assert sys.getswitchinterval() == before  # restored
    assert 0.9 < r.elapsed_s < 3.0 and r.loops > 10 and r.failure_count == 0
    assert r.settings["switch_interval_us"] == 200


@pytest.mark.parametrize("policy", ["linux-6.6", "adaptive", "rfc-v1", "lending"])
def test_other_policies_bounce(policy: str) -> None:
    r = run_map_benchmark(loops=20, granule=2, pool="force", policy=policy, direction=1)
    assert r.loops == 20 and r.bounced_maps == 20 and r.failure_count == 0


def test_cli_policy_knob() -> None:
    res = invoke("-p", "adaptive", "-o", "idle_ns=5000000000", "--pool", "force", "--loops", "5", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["settings"]["policy"] == "adaptive" and data["settings"]["policy_options"] == {"idle_ns": 5000000000}
    assert data["bounced_maps"] == 5


def test_a_failing_thread_stops_the_run_and_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    from swiotlb.dma.device import Device

    def broken(self: Device, *args: Any, **kwargs: Any) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(Device, "map_single", broken)
    with pytest.raises(RuntimeError, match="boom"):
        run_map_benchmark(threads=3, seconds=5, pool="force")
