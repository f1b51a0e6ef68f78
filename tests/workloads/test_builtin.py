"""The built-in scenarios: they load, are addressable, and carry the numbers of scenarios.md §8."""

from __future__ import annotations

import pytest

from swiotlb.core.sizing import plan_boot_pool, x86_needs_swiotlb
from swiotlb.workloads.scenario import ScenarioSpec, builtin_scenarios, find_scenario

IDS = ["S1", "S4", "S5", "S6", "S7", "S10", "S11", "S12", "S14"]


def by_id() -> dict[str, ScenarioSpec]:
    return {s.id or "": s for s in builtin_scenarios()}


def test_order_and_ids_unique() -> None:
    specs = builtin_scenarios()
    assert [s.id for s in specs] == IDS
    assert len({s.name for s in specs}) == len(specs)
    for s in specs:
        assert s.source == f"builtin:{s.id}"
        assert s.checks and s.title and s.workloads and s.devices


@pytest.mark.parametrize("sid", IDS)
def test_find_by_id_name_and_lowercase(sid: str) -> None:
    spec = by_id()[sid]
    assert find_scenario(sid) is spec
    assert find_scenario(sid.lower()) is spec
    assert find_scenario(spec.name) is spec


def _plan(spec: ScenarioSpec):  # type: ignore[no-untyped-def]
    m = spec.machine
    needs = x86_needs_swiotlb(m.ram, m.coco) if m.arch == "x86_64" else m.ram > (1 << (m.zone_dma_bits or 32))
    return plan_boot_pool(ram_bytes=m.ram, possible_cpus=m.cpus, cmdline=m.cmdline, coco=m.coco,
                          arch=m.arch, page_size=m.page_size, needs_bounce=needs)


def test_pools_follow_the_kernel_rules() -> None:
    """Pool sizes the files' comments promise (scenarios.md §1 and §8)."""
    want = {"S1": (524288, 8), "S4": (32768, 4), "S5": (32768, 4), "S6": (1024, 8), "S7": (32768, 4),
            "S10": (32768, 8), "S11": (32768, 1), "S12": (524288, 8), "S14": (65536, 8)}
    for sid, spec in by_id().items():
        plan = _plan(spec)
        assert (plan.nslabs, plan.nareas) == want[sid], sid


def test_s1_numbers() -> None:
    s = by_id()["S1"]
    assert s.machine.ram == 64 << 30 and s.machine.coco and s.machine.cpus == 8
    jobs = {w.name: w for w in s.workloads}
    assert (jobs["j1"].bs, jobs["j1"].iodepth, jobs["j1"].jobs) == (((4096, 1),), 1, 1)  # type: ignore[attr-defined]
    assert (jobs["j2"].rw, jobs["j2"].rwmixread, jobs["j2"].iodepth, jobs["j2"].jobs) == ("randrw", 70, 32, 4)  # type: ignore[attr-defined]
    assert (jobs["j3"].bs, jobs["j3"].iodepth, jobs["j3"].jobs) == (((131072, 1),), 128, 4)  # type: ignore[attr-defined]
    devs = {d.name: d for d in s.devices}
    # Little's law calibration: IOPS = in flight / service time, within 5 % of CVM_eval's numbers.
    for name, dev, inflight, iops, size in (("j1", "vda-qd1", 1, 8400, 4096), ("j2", "vda-qd32", 128, 110_000, 4096),
                                            ("j3", "vda-qd128", 512, 30_700, 131072)):
        got = inflight * 10**9 / devs[dev].service_ns(size)
        assert abs(got / iops - 1) < 0.05, name


def test_s4_frames() -> None:
    s = by_id()["S4"]
    assert s.machine.ram == 8 << 30 and s.machine.arch == "arm64" and s.machine.zone_dma_bits == 30
    assert s.devices[0].dma_bits == 30
    sizes = {w.size[0][0] for w in s.workloads}  # type: ignore[attr-defined]
    assert sizes == {8_294_400, 35_389_440}
    assert all(w.fps == 60.0 and w.buffers == 3 for w in s.workloads)  # type: ignore[attr-defined]
    (start, size), = s.machine.cma
    assert start + size <= 1 << 30 and 256 << 20 <= size <= 512 << 20
    assert dict(s.policy_options["lending"]) == {"region_start": start, "region_bytes": size}


def test_s5_leak_fills_in_15_to_20_minutes() -> None:
    s = by_id()["S5"]
    w = {x.kind: x for x in s.workloads}  # type: ignore[attr-defined]
    slow, leak, dd = w["poisson"], w["leak"], w["fio"]
    steady = slow.rate_per_s * slow.hold_ns / 10**9 * -(-slow.bs[0][0] // 2048)  # type: ignore[attr-defined]
    assert 0.80 < steady / 32768 < 0.86
    free = 32768 - steady - dd.iodepth * dd.jobs * 128  # type: ignore[attr-defined]
    minutes = free / leak.rate_per_s / 60  # type: ignore[attr-defined]
    assert 15 <= minutes <= 20
    assert all(d.dma_bits == 32 for d in s.devices)


def test_s7_leak_exhausts_after_about_a_day() -> None:
    s = by_id()["S7"]
    leak = next(w for w in s.workloads if w.kind == "leak")  # type: ignore[attr-defined]
    assert leak.rate_per_s == 0.19 and leak.bs == ((4000, 1),)  # type: ignore[attr-defined]
    assert s.duration_ns > 32768 / 2 / 0.19 * 10**9 * 0.98


def test_s10_s14_alignment() -> None:
    s10, s14 = by_id()["S10"], by_id()["S14"]
    assert s10.machine.page_size == 65536 and s10.devices[0].min_align_mask == 0xFFF
    sizes = {sz for w in s10.workloads for sz, _ in w.bs}  # type: ignore[attr-defined]
    assert {262144, 327680, 258048} <= sizes
    nvme = next(d for d in s14.devices if d.name == "nvme0")
    storage = next(w for w in s14.workloads if w.name == "storage")
    assert nvme.min_align_mask == 0xFFF and storage.bs == ((258048, 1),)  # type: ignore[attr-defined]
    assert storage.may_sleep and storage.defer and storage.iodepth * storage.jobs == 512  # type: ignore[attr-defined]


def test_s12_bursts() -> None:
    s = by_id()["S12"]
    w = s.workloads[0]
    assert s.machine.coco and s.machine.ram == 16 << 30
    assert w.jobs * w.burst_iodepth * w.bs[0][0] == 512 << 20  # type: ignore[attr-defined]
    assert w.burst_ns == 10 * 10**9 and w.period_ns == 600 * 10**9  # type: ignore[attr-defined]
    bursts = (s.duration_ns - w.burst_at_ns + w.period_ns - 1) // w.period_ns  # type: ignore[attr-defined]
    assert 2 <= bursts <= 3
    assert s.policy_options["adaptive"]["initial_slabs"] == 32768
