"""The simulator end to end: determinism, failure causes, deferral, lock waits, copies, costs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from swiotlb.dma.errors import DoubleUnmapError
from swiotlb.dma.types import DmaAttrs, DmaDirection
from swiotlb.policies import POLICIES, policy_class
from swiotlb.sim.costs import CostModel
from swiotlb.sim.metrics import StepGauge
from swiotlb.sim.simulation import PENDING, SimMapping, Simulation, SimulationError
from swiotlb.sim.spec import DeviceSpec, MachineSpec
from swiotlb.workloads import Fio, Poisson

MS = 1_000_000
US = 1_000
TO, FROM, BIDI = DmaDirection.TO_DEVICE, DmaDirection.FROM_DEVICE, DmaDirection.BIDIRECTIONAL
DISK = DeviceSpec("vda", latency_ns=50 * US, bandwidth=4_000_000_000)

SCHEMA = {"scenario", "policy", "seed", "maps", "failures", "deferred", "peak_footprint_bytes",
          "avg_footprint_bytes", "hiwater_slots", "bytes_copied", "map_ns", "lock_wait_ns_total",
          "decrypt_ops", "encrypt_ops", "pools_created", "pools_freed", "oom_events"}


def sim(machine: dict[str, Any] | None = None, devices: tuple[DeviceSpec, ...] = (DISK,), **kw: Any) -> Simulation:
    spec = MachineSpec(**({"ram": 1 << 30, "cpus": 4, "cmdline": "swiotlb=force"} | (machine or {})))
    return Simulation(spec, devices, **({"duration_ns": 20 * MS, "seed": 7} | kw))


def fio_run(seed: int, policy: str = "static") -> str:
    s = sim(policy=policy, seed=seed)
    s.add(Fio("j", "vda", bs=((4096, 3), (65536, 1)), rw="randrw", iodepth=8, jobs=3))
    return json.dumps(s.run(), sort_keys=True)


@pytest.mark.parametrize("policy", ["static", "adaptive"])
def test_same_seed_same_bytes(policy: str) -> None:
    assert fio_run(3, policy) == fio_run(3, policy)


def test_another_seed_another_run() -> None:
    assert fio_run(3) != fio_run(4)


def test_result_has_the_schema() -> None:
    r = json.loads(fio_run(1))
    assert SCHEMA <= set(r)
    assert set(r["failures"]) == {"full", "too_large", "unaddressable", "no_memory"}
    assert {"p50", "p99"} <= set(r["map_ns"])
    assert r["maps"] == r["succeeded"] > 1000
    assert r["counters"]["j/ios"] > 1000 and r["series"]["j/latency_ns"]["count"] == r["counters"]["j/ios"]
    assert r["steps"]["slot_mark"] > 0 and r["steps"]["copy_byte"] == r["bytes_copied"]


# -- failures by cause ------------------------------------------------------------------------
def test_full_when_the_pool_is_short() -> None:
    s = sim({"cmdline": "swiotlb=1024,force"})  # 2 MiB
    s.add(Fio("j", "vda", bs=((262144, 1),), iodepth=32, jobs=2, requeue_ns=200 * US))
    r = s.run()
    assert r["failures"]["full"] > 0 and r["counters"]["j/requeued"] == r["failures"]["full"]
    assert r["peak_in_use_bytes"] <= 2 << 20


def test_too_large_above_the_max_mapping_size() -> None:
    s = sim()
    assert s.map("vda", (256 << 10) + 1, TO) is None
    assert s.map("vda", 256 << 10, TO) is not None
    assert s.result()["failures"] == {"full": 0, "too_large": 1, "unaddressable": 0, "no_memory": 0}


def test_unaddressable_when_the_bounce_buffer_is_out_of_reach() -> None:
    """A 24-bit device bounces through a pool placed below 4 GiB, above its reach (§4.3)."""
    s = sim(devices=(DeviceSpec("isa", dma_bits=24),))
    assert s.map("isa", 4096, TO, phys=512 << 20) is None
    r = s.result()
    assert r["failures"]["unaddressable"] == 1 and s.policy.mem.total_used == 0  # the slots went back


def test_unaddressable_without_a_pool() -> None:
    s = sim({"cmdline": ""}, devices=(DeviceSpec("d32", dma_bits=32),))  # 1 GiB, no force: no pool
    assert s.map("d32", 4096, TO, phys=64 << 20).bounced is False  # type: ignore[union-attr]
    assert s.result()["failures"]["unaddressable"] == 0


def test_no_memory_when_a_transient_pool_cannot_be_had() -> None:
    """Adaptive, CoCo, atomic callers: past the boot pool, transient pools come from the small
    atomic pool; once that is gone, maps fail for lack of memory, not of slots."""
    s = sim({"coco": True, "cmdline": ""}, policy="adaptive")
    got = [s.map("vda", 4096, TO) for _ in range(400)]
    r = s.result()
    assert r["failures"]["no_memory"] > 0 and r["failures"]["full"] == 0
    assert sum(m is not None for m in got) == r["succeeded"]


# -- deferral, workers and pools --------------------------------------------------------------
def test_deferred_maps_complete_by_callback() -> None:
    s = sim(policy="adaptive", policy_options={"max_total_slabs": 1024, "initial_slabs": 512, "transient": False})
    s.add(Fio("j", "vda", bs=((131072, 1),), iodepth=16, jobs=2, may_sleep=True, defer=True))
    r = s.run()
    assert r["deferred"] > 0 and r["defer_wait_ns"]["count"] > 0 and r["defer_wait_ns"]["max"] > 0
    assert sum(r["failures"].values()) == 0 and "j/requeued" not in r["counters"]
    assert r["peak_footprint_bytes"] <= 2 << 20


def test_pending_is_returned_and_then_called() -> None:
    s = sim(policy="adaptive", policy_options={"max_total_slabs": 512, "initial_slabs": 512, "transient": False})
    held = [s.map("vda", 131072, TO, may_sleep=True) for _ in range(8)]  # 8 x 64 slots: full
    assert all(isinstance(m, SimMapping) for m in held)
    seen: list[Any] = []
    assert s.map("vda", 131072, TO, may_sleep=True, then=seen.append) is PENDING
    s.engine.at(MS, lambda: s.unmap(held[0]))  # type: ignore[arg-type]
    s.engine.run(until_ns=2 * MS)
    assert len(seen) == 1 and isinstance(seen[0], SimMapping) and seen[0].bounced
    assert s.result()["defer_wait_ns"]["max"] >= MS


def test_linux66_worker_adds_a_pool_after_a_failure() -> None:
    s = sim({"cmdline": "swiotlb=512,force"}, policy="linux-6.6", policy_options={"transient": False})
    s.add(Poisson("p", "vda", rate_per_s=200_000.0, bs=((65536, 1),), hold_ns=2 * MS))
    r = s.run()
    assert r["failures"]["full"] > 0 and r["pools_created"] >= 1 and r["worker_runs"] >= 1
    assert r["peak_footprint_bytes"] > 1 << 20 and r["steps"]["worker_wakeup"] == r["worker_runs"]


def test_adaptive_grows_and_reports_pools_and_decrypts() -> None:
    s = sim({"coco": True, "cmdline": ""}, policy="adaptive")
    s.add(Fio("j", "vda", bs=((131072, 1),), iodepth=32, jobs=4))
    r = s.run()
    assert sum(r["failures"].values()) == 0
    assert r["pools_created"] > 0 and r["decrypt_ops"] >= 1
    assert r["peak_footprint_bytes"] >= r["peak_inflight_bytes"] > 8 << 20
    assert any(k.startswith("page_alloc_order_") for k in r["steps"])
    assert r["steps"]["conversion_call"] == r["decrypt_ops"] + r["encrypt_ops"]


# -- contention, copies, costs ----------------------------------------------------------------
def lock_wait(cmdline: str) -> int:
    s = sim({"cmdline": cmdline, "cpus": 8})

    def burst() -> None:
        for cpu in range(8):
            s.map("vda", 4096, TO, cpu=cpu)

    for t in range(0, 10 * MS, 100 * US):
        s.engine.at(t, burst)
    return int(s.run()["lock_wait_ns_total"])


def test_one_area_makes_cpus_wait_and_eight_do_not() -> None:
    assert lock_wait("swiotlb=32768,1,force") > 0
    assert lock_wait("swiotlb=32768,8,force") == 0


SKIP = int(DmaAttrs.SKIP_CPU_SYNC)


@pytest.mark.parametrize(("profile", "direction", "attrs", "at_map", "at_unmap"), [
    ("v5.15", TO, 0, 4096, 0), ("v5.15", FROM, 0, 0, 4096), ("v5.15", BIDI, 0, 4096, 4096),
    ("v5.15", BIDI, SKIP, 0, 0),
    # >= 5.18 copies in at map whatever the direction (no stale data leaks to the device)
    ("v6.12", FROM, 0, 4096, 4096), ("v6.12", FROM, SKIP, 4096, 0), ("v6.12", TO, 0, 4096, 0),
])
def test_bytes_copied_by_direction(profile: str, direction: DmaDirection, attrs: int, at_map: int,
                                   at_unmap: int) -> None:
    s = sim({"profile": profile})
    m = s.map("vda", 4096, direction, attrs=attrs)
    assert isinstance(m, SimMapping)
    assert s.metrics.bytes_copied == at_map
    s.unmap(m)
    assert s.metrics.bytes_copied == at_map + at_unmap


def test_map_cost_includes_the_copy_and_ready_ns_follows() -> None:
    costs = CostModel(copy_bytes_per_us=1000)  # 1 GB/s: 131 us for 128 KiB
    s = sim(costs=costs)
    m = s.map("vda", 131072, TO)
    assert isinstance(m, SimMapping)
    assert m.map_ns >= costs.copy_ns(131072) == 131072
    assert m.ready_ns == m.map_ns  # at time 0, no lock wait
    s = sim({"profile": "v5.15"}, costs=costs)
    assert s.map("vda", 131072, FROM).map_ns < 1000  # type: ignore[union-attr]  # no copy in


def test_double_unmap_raises_and_keeps_state() -> None:
    s = sim()
    m = s.map("vda", 8192, TO)
    assert isinstance(m, SimMapping)
    s.unmap(m)
    used = s.policy.mem.total_used
    with pytest.raises(DoubleUnmapError, match="vda.*already unmapped"):
        s.unmap(m)
    assert s.policy.mem.total_used == used == 0


def test_bad_calls_name_what_is_wrong() -> None:
    s = sim()
    with pytest.raises(KeyError, match="nvme0.*known: vda"):
        s.map("nvme0", 4096, TO)
    with pytest.raises(SimulationError, match="cpu 9"):
        s.map("vda", 4096, TO, cpu=9)
    with pytest.raises(SimulationError, match="positive"):
        s.map("vda", 0, TO)
    with pytest.raises(SimulationError, match="duration_ns"):
        sim(duration_ns=0)
    with pytest.raises(SimulationError, match="listed twice"):
        sim(devices=(DISK, DISK))


def test_a_simulation_runs_once() -> None:
    s = sim()
    s.run()
    with pytest.raises(SimulationError, match="runs once"):
        s.run()
    with pytest.raises(SimulationError, match="has run"):
        s.add(Fio("late", "vda"))


def test_footprint_time_series_on_a_grid() -> None:
    s = sim({"coco": True, "cmdline": ""}, policy="adaptive", grid_step_ns=MS)
    s.add(Fio("j", "vda", bs=((131072, 1),), iodepth=32, jobs=2, start_ns=5 * MS))
    ts = s.run()["time_series"]
    assert ts["t_ns"] == list(range(0, 20 * MS + 1, MS))
    assert ts["reserved_bytes"][0] == 1 << 20 and max(ts["reserved_bytes"]) > 1 << 20
    assert ts["in_use_bytes"][0] == 0 and max(ts["in_use_bytes"]) > 0


# -- pricing ------------------------------------------------------------------------------------
class PricingCheck:
    """The simulation a :func:`checked` policy checks, and how many calls it checked."""

    sim: Simulation | None = None
    calls = 0

    def __call__(self) -> None:
        s = self.sim
        if s is not None:  # None while the machine is being built
            assert s._work == s._priced()
            self.calls += 1


def checked(monkeypatch: pytest.MonkeyPatch, policy: str) -> PricingCheck:
    """Register ``policy`` as a subclass whose map and release check the invariant that prices a
    call with one reading: the slot work priced so far equals the simulator's running total
    whenever the policy is entered (so a call's hold is its own work only).

    The simulator calls ``self.policy.map`` and ``release`` directly, and a compiled policy's
    methods cannot be replaced on the instance, so the check sits on a subclass (the compiled
    policies allow interpreted subclasses). Set the returned check's ``sim`` once it is built.
    """
    check = PricingCheck()
    base: Any = policy_class(policy)

    class Checked(base):  # type: ignore[misc,valid-type]
        def map(self, *a: Any, **kw: Any) -> Any:
            check()
            return super().map(*a, **kw)

        def release(self, *a: Any, **kw: Any) -> Any:
            check()
            return super().release(*a, **kw)

    monkeypatch.setitem(POLICIES, policy, Checked)
    return check


@pytest.mark.parametrize("case", ["deferrals", "worker", "unaddressable", "full"])
def test_each_call_is_priced_from_the_work_it_adds(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = {"deferrals": "adaptive", "worker": "linux-6.6"}.get(case, "static")
    check = checked(monkeypatch, policy)
    if case == "deferrals":  # retries run inside the worker, after its own slot work
        s = sim(policy="adaptive", policy_options={"max_total_slabs": 1024, "initial_slabs": 512, "transient": False})
        s.add(Fio("j", "vda", bs=((131072, 1),), iodepth=16, jobs=2, may_sleep=True, defer=True))
    elif case == "worker":
        s = sim({"cmdline": "swiotlb=512,force"}, policy="linux-6.6", policy_options={"transient": False})
        s.add(Poisson("p", "vda", rate_per_s=200_000.0, bs=((65536, 1),), hold_ns=2 * MS))
    elif case == "unaddressable":  # the slots are given back unpriced
        s = sim(devices=(DeviceSpec("isa", dma_bits=24), DISK))
        s.add(Fio("j", "vda", iodepth=4))
        s.engine.at(MS, lambda: s.map("isa", 4096, TO, phys=512 << 20))
    else:
        s = sim({"cmdline": "swiotlb=1024,force"})
        s.add(Fio("j", "vda", bs=((262144, 1),), iodepth=32, jobs=2, requeue_ns=200 * US))
    assert type(s.policy).__name__ == "Checked"
    check.sim = s
    r = s.run()
    assert s._work == s._priced() and r["maps"] > 100
    assert check.calls >= r["maps"] + r["unmaps"]  # every map and unmap entered the policy checked
    assert {"deferrals": r["deferred"], "worker": r["worker_runs"], "full": r["failures"]["full"],
            "unaddressable": r["failures"]["unaddressable"]}[case] > 0  # the path was taken


def test_map_ns_is_the_slot_work_plus_the_copy() -> None:
    """Priced by hand: the steps one map adds, at the cost model's prices, plus its copy."""
    costs = CostModel()
    s = sim(costs=costs)
    for size in (4096, 65536, 4096):
        before = dict(s._steps)
        m = s.map("vda", size, TO, cpu=1)
        assert isinstance(m, SimMapping)
        added = {k: s._steps[k] - before.get(k, 0) for k in ("slot_probe", "slot_mark", "list_fixup",
                                                             "lock_acquire", "pool_walk")}
        assert added["slot_mark"] == size // 2048 and added["lock_acquire"] == 1
        slot_work = sum(n * getattr(costs, f"{k}_ns") for k, n in added.items())
        assert m.map_ns == slot_work + costs.copy_ns(size)


def test_a_failed_release_keeps_the_mapping_live_and_counts_nothing() -> None:
    from swiotlb.core import ReleaseError

    s = sim()
    m = s.map("vda", 8192, FROM)
    assert isinstance(m, SimMapping)
    copied, used = s.metrics.bytes_copied, s.policy.mem.total_used
    good = m.dma_addr
    m.dma_addr = good + (64 << 11)  # a slot nobody holds
    with pytest.raises(ReleaseError):
        s.unmap(m)
    assert m.live and s.unmaps == 0 and s.metrics.bytes_copied == copied and s.policy.mem.total_used == used
    m.dma_addr = good
    s.unmap(m)
    assert not m.live and s.unmaps == 1 and s.metrics.bytes_copied == copied + 8192
    assert s.policy.mem.total_used == 0


@pytest.mark.parametrize("policy", ["static", "adaptive"])
def test_inflight_figures_match_a_gauge(policy: str) -> None:
    """The in-flight peak and average, kept as running sums, are those of a gauge of the bytes
    mapped through bounce buffers (mappings left live at the end included)."""
    s = sim(policy=policy, duration_ns=5 * MS)
    fio = Fio("j", "vda", bs=((4096, 3), (65536, 1)), rw="randrw", iodepth=8, jobs=3)
    gauge = StepGauge()
    live: set[int] = set()
    sim_map, sim_unmap = s.map, s.unmap

    def map_(*a: Any, **kw: Any) -> Any:
        m = sim_map(*a, **kw)
        if isinstance(m, SimMapping) and m.bounced:
            live.add(id(m))
            gauge.set(s.now, gauge.value + m.size)
        return m

    def unmap(m: SimMapping, **kw: Any) -> None:
        sim_unmap(m, **kw)
        if id(m) in live:
            live.discard(id(m))
            gauge.set(s.now, gauge.value - m.size)

    class View:  # the simulation as the workload sees it, with map and unmap wrapped
        def __getattr__(self, name: str) -> Any:
            return getattr(s, name)

    view = View()
    view.map, view.unmap = map_, unmap  # type: ignore[attr-defined]

    class Started:  # the workload, started on the view (a compiled Simulation's methods are fixed)
        name = fio.name

        def start(self, _: Any) -> None:
            fio.start(view)  # type: ignore[arg-type]

    s.add(Started())
    r = s.run()
    assert live and r["peak_inflight_bytes"] == gauge.peak > 0
    assert r["avg_inflight_bytes"] == gauge.average_int(5 * MS)
