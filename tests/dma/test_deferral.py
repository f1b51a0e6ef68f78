"""Deferred maps (FreeBSD busdma style): queued FIFO instead of failing, completed by the worker."""

from __future__ import annotations

import pytest

from swiotlb import DmaDirection, DmaMappingError, Machine
from swiotlb.dma import DeferredMap, MappingsLeakedError
from swiotlb.policies import AdaptivePolicy

TO, FROM = DmaDirection.TO_DEVICE, DmaDirection.FROM_DEVICE
KIB = 1 << 10
MS = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def full_machine(policy: str = "adaptive", **knobs: object) -> tuple[Machine, Clock, list[int]]:
    """A 1 MiB pool that cannot grow (adaptive: max 512 slots, no transient pools), filled by
    four 256 KiB mappings whose DMA addresses are returned."""
    clock = Clock()
    options = {"max_total_slabs": 512, "transient": False, **knobs} if policy == "adaptive" else {}
    m = Machine("4G", cmdline="swiotlb=512,force", policy=policy, policy_options=options, clock=clock)
    dev = m.add_device("nvme0")
    fills = [dev.map_single(m.alloc(256 * KIB), 256 * KIB, TO) for _ in range(4)]
    assert m.stats["io_tlb_used"] == 512
    return m, clock, fills


def test_deferred_maps_complete_in_fifo_order_with_their_bytes_and_measured_waits() -> None:
    m, clock, fills = full_machine()
    dev = m.devices["nvme0"]
    policy = m.policy
    assert isinstance(policy, AdaptivePolicy)
    done: list[str] = []
    sizes = {"a": 64 * KIB, "b": 200 * KIB, "c": 4 * KIB}
    bufs = {k: m.alloc(n) for k, n in sizes.items()}
    for k, buf in bufs.items():
        buf.write(bytes([ord(k)]) * buf.size)
    tickets: dict[str, DeferredMap] = {}
    for k in "abc":
        direction = FROM if k == "c" else TO
        tickets[k] = dev.map_single_deferred(bufs[k], sizes[k], direction, lambda t, k=k: done.append(k))
    assert all(t.deferred and t.pending and t.dma_addr is None for t in tickets.values())
    assert done == [] and policy.stats()["deferred"] == 3 and policy.stats()["deferred_pending"] == 3
    assert m.dma.deferred_waiting(dev) == 3

    clock.now = 5 * MS
    dev.unmap(fills.pop(), 256 * KIB, TO)  # 128 slots free: room for a (32), not for a + b (132)
    assert done == []  # callbacks never run inside an unmap
    m.run_deferred()
    assert done == ["a"]  # b does not fit yet, and c (2 slots) may not overtake it
    clock.now = 12 * MS
    dev.unmap(fills.pop(), 256 * KIB, TO)
    m.run_deferred()
    assert done == ["a", "b", "c"]
    a, b, c = tickets["a"], tickets["b"], tickets["c"]
    assert (a.wait_ns, b.wait_ns, c.wait_ns) == (5 * MS, 12 * MS, 12 * MS)
    stats = policy.stats()
    assert stats["deferred_completed"] == 3 and stats["deferred_pending"] == 0
    assert stats["deferred_wait_total_ns"] == 29 * MS and stats["deferred_wait_max_ns"] == 12 * MS

    assert a.dma_addr is not None and b.dma_addr is not None and c.dma_addr is not None
    assert dev.dma_read(a.dma_addr, sizes["a"]) == b"a" * sizes["a"]  # copied in at completion
    assert dev.dma_read(b.dma_addr, sizes["b"]) == b"b" * sizes["b"]
    dev.dma_write(c.dma_addr, b"from the device")
    dev.sync_for_cpu(c.dma_addr, 4 * KIB, FROM)  # registered: syncs and debug checks work
    assert bufs["c"].read(0, 15) == b"from the device"
    for k, t in tickets.items():
        assert t.dma_addr is not None
        dev.unmap(t.dma_addr, sizes[k], FROM if k == "c" else TO)
    for dma in fills:
        dev.unmap(dma, 256 * KIB, TO)
    assert dev.live_mappings() == [] and m.stats["io_tlb_used"] == 0
    assert all(z.mem.check_invariants() == [] for z in policy._zones.values())
    dev.remove()


def test_a_map_with_room_completes_at_once_and_calls_back_before_returning() -> None:
    m = Machine("4G", cmdline="swiotlb=force", policy="adaptive", clock=Clock())
    dev = m.add_device("nvme0")
    buf = m.alloc(4096)
    seen: list[DeferredMap] = []
    t = dev.map_single_deferred(buf, 4096, TO, seen.append)
    assert seen == [t] and not t.deferred and not t.pending and t.wait_ns == 0 and t.dma_addr is not None
    dev.unmap(t.dma_addr, 4096, TO)
    assert m.policy.stats()["deferred"] == 0


def test_atomic_callers_are_never_deferred() -> None:
    m, _, fills = full_machine()
    dev = m.devices["nvme0"]
    buf = m.alloc(4096)
    queued = dev.map_single_deferred(buf, 4096, TO, lambda t: None)  # a sleeper waits
    called: list[DeferredMap] = []
    with pytest.raises(DmaMappingError) as info:
        dev.map_single_deferred(buf, 4096, TO, called.append, may_sleep=False)
    assert info.value.cause == "full" and called == []
    with pytest.raises(DmaMappingError):
        dev.map_single(buf, 4096, TO)
    assert m.policy.stats()["deferred"] == 1 and queued.pending


def test_a_map_that_can_never_fit_fails_at_once() -> None:
    m, _, _ = full_machine(large_buffers=False)
    dev = m.devices["nvme0"]
    called: list[DeferredMap] = []
    with pytest.raises(DmaMappingError) as info:
        dev.map_single_deferred(m.alloc(1 << 20), 1 << 20, TO, called.append)
    assert info.value.cause == "too_large" and called == []
    assert m.policy.stats()["deferred"] == 0 and m.dma.deferred_waiting(dev) == 0


def test_behind_waiters_a_map_queues_untried_and_learns_a_permanent_failure_by_callback() -> None:
    m, clock, fills = full_machine(large_buffers=False)
    dev = m.devices["nvme0"]
    seen: list[DeferredMap] = []
    small = dev.map_single_deferred(m.alloc(4096), 4096, TO, seen.append)
    huge = dev.map_single_deferred(m.alloc(1 << 20), 1 << 20, TO, seen.append)  # FIFO: no overtaking
    assert small.deferred and huge.deferred and m.dma.deferred_waiting(dev) == 2
    clock.now = 3 * MS
    dev.unmap(fills.pop(), 256 * KIB, TO)
    m.run_deferred()
    assert seen == [small, huge] and small.dma_addr is not None and small.error is None
    assert huge.dma_addr is None and huge.error is not None and huge.error.cause == "too_large"
    assert huge.wait_ns == 3 * MS and m.dma.deferred_waiting(dev) == 0
    assert len(dev.live_mappings()) == 4  # three fills and the small map; nothing leaked


def test_a_policy_that_does_not_defer_fails_as_linux_does() -> None:
    m, _, fills = full_machine("static")
    dev = m.devices["nvme0"]
    with pytest.raises(DmaMappingError) as info:
        dev.map_single_deferred(m.alloc(4096), 4096, TO, lambda t: None)
    assert info.value.cause == "full" and m.dma.deferred_waiting(dev) == 0


def test_a_device_with_queued_maps_cannot_be_removed() -> None:
    m, _, fills = full_machine()
    dev = m.devices["nvme0"]
    t = dev.map_single_deferred(m.alloc(4096), 4096, TO, lambda t: None)
    for dma in fills:
        dev.unmap(dma, 256 * KIB, TO)
    with pytest.raises(MappingsLeakedError, match="1 deferred map"):
        dev.remove()
    m.run_deferred()
    assert t.dma_addr is not None
    dev.unmap(t.dma_addr, 4096, TO)
    dev.remove()
