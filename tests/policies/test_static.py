"""StaticPolicy: the fixed boot pool behind the BouncePolicy interface."""

from __future__ import annotations

from typing import Any

import pytest

from swiotlb.core import IoTlbMem, IoTlbPool, MapFailure, MapRefused, SlotMapping
from swiotlb.dma.device import Device
from swiotlb.policies import POLICIES, BouncePolicy, StaticPolicy
from swiotlb.policies.base import PolicyDevice

BASE = 0x1000_0000


def make(nslabs: int = 1024, nareas: int = 2, **kw: Any) -> StaticPolicy:
    return StaticPolicy(IoTlbMem([IoTlbPool(BASE, nslabs, nareas)], **kw))


def test_registry_and_name() -> None:
    assert POLICIES["static"] is StaticPolicy
    assert StaticPolicy.name == "static"
    assert isinstance(make(), BouncePolicy)


def test_map_is_the_allocator_answer_slot_for_slot() -> None:
    policy = make()
    twin = IoTlbMem([IoTlbPool(BASE, 1024, 2)])
    nvme = Device("nvme", min_align_mask=0xFFF)
    plain = Device("virtio")
    requests = [(nvme, 0x5000_0200, 8192, 0), (plain, 0x7000_0010, 100, 1), (nvme, 0x6000_0A00, 4000, 1),
                (plain, 0x1234_5000, 65536, 0)]
    for dev, orig, size, cpu in requests:
        got = policy.map(dev, orig, size, cpu=cpu)
        want = twin.tbl_map_single(dev, orig, size, cpu=cpu)
        assert isinstance(got, SlotMapping) and isinstance(want, SlotMapping)
        assert (got.tlb_addr, got.index, got.nslots, got.pad_slots) == (want.tlb_addr, want.index, want.nslots, want.pad_slots)
    assert policy.counters() == twin.counters()


def test_release_frees_the_slots_and_bounce_target_maps_bytes() -> None:
    policy = make()
    dev = Device("nvme", min_align_mask=0xFFF)
    m = policy.map(dev, 0x5000_0300, 5000)
    assert isinstance(m, SlotMapping)
    span = policy.bounce_target(dev, m.tlb_addr + 3000, 100, m.pool)
    assert span is not None and span.orig_addr == 0x5000_0300 + 3000 and span.nbytes == 100
    assert policy.find_pool(dev, m.tlb_addr) is m.pool
    assert policy.is_bounce_buffer(dev, m.tlb_addr)
    assert not policy.is_bounce_buffer(dev, BASE - 1)
    assert policy.release(dev, m.tlb_addr, m.pool) == m.nslots
    assert policy.counters()["io_tlb_used"] == 0
    assert policy.mem.check_invariants() == []


def test_a_failed_search_is_final_and_reports_the_kernel_numbers() -> None:
    policy = make(nslabs=256, nareas=1)
    dev = Device("virtio")
    for i in range(2):
        assert isinstance(policy.map(dev, 0x4000_0000 + i * 0x40000, 128 * 2048), SlotMapping)
    refused = policy.map(dev, 0x5000_0000, 4096)
    assert isinstance(refused, MapRefused) and refused.cause is MapFailure.FULL
    assert refused.message == "swiotlb buffer is full (sz: 4096 bytes), total 256 (slots), used 256 (slots)"
    too_big = policy.map(dev, 0x5000_0000, 128 * 2048 + 1)
    assert isinstance(too_big, MapRefused) and too_big.cause is MapFailure.TOO_LARGE


def test_the_failure_hook_sees_every_refusal_and_may_substitute() -> None:
    class Recording(StaticPolicy):
        name = "recording"

        def __init__(self, mem: IoTlbMem, spare: IoTlbMem) -> None:
            super().__init__(mem)
            self.spare = spare
            self.seen: list[tuple[str, int, bool, int]] = []

        def on_map_failure(self, dev: PolicyDevice, orig_addr: int, size: int, alloc_align_mask: int,
                           refused: MapRefused, *, cpu: int, may_sleep: bool, attrs: int) -> SlotMapping | MapRefused:
            self.seen.append((dev.name, dev.dma_limit, may_sleep, cpu))
            return self.spare.tbl_map_single(dev, orig_addr, size, alloc_align_mask, cpu=cpu)

    policy = Recording(IoTlbMem([IoTlbPool(BASE, 128)]), IoTlbMem([IoTlbPool(0x2000_0000, 128)]))
    dev = Device("gpu", dma_mask=(1 << 40) - 1, bus_dma_limit=(1 << 36) - 1)
    first = policy.map(dev, 0x4000_0000, 128 * 2048, cpu=0)
    second = policy.map(dev, 0x5000_0000, 4096, cpu=3, may_sleep=True)
    assert isinstance(first, SlotMapping) and first.pool.start == BASE
    assert isinstance(second, SlotMapping) and second.pool.start == 0x2000_0000
    assert policy.seen == [("gpu", (1 << 36) - 1, True, 3)]


def test_limits_and_activity_follow_the_allocator() -> None:
    policy = make(force_bounce=True)
    dev = Device("nvme", min_align_mask=0xFFF)
    assert policy.force_bounce(dev) and policy.is_active(dev)
    assert policy.max_mapping_size(dev) == 258048
    assert policy.max_mapping_size(Device("virtio")) == 262144
    stats = policy.stats()
    assert stats["policy"] == "static" and stats["io_tlb_nslabs"] == 1024


def test_without_a_pool_there_is_nothing_to_report() -> None:
    policy = StaticPolicy(IoTlbMem([]))
    dev = Device("virtio")
    assert not policy.is_active(dev)
    assert policy.counters() == {}
    refused = policy.map(dev, 0x1000, 16)
    assert isinstance(refused, MapRefused) and refused.cause is MapFailure.NO_POOL


def test_a_dynamic_allocator_is_not_static() -> None:
    mem = IoTlbMem([IoTlbPool(BASE, 1024), IoTlbPool(BASE + (1 << 24), 1024)], dynamic=True)
    with pytest.raises(ValueError, match="CONFIG_SWIOTLB_DYNAMIC"):
        StaticPolicy(mem)


def test_device_hooks_and_deferred_work_are_no_ops_for_a_fixed_pool() -> None:
    policy = make()
    dev = Device("virtio")
    before = policy.mem.counters()
    policy.attach_device(dev)
    assert policy.run_deferred() == 0
    policy.detach_device(dev)
    assert policy.mem.counters() == before
    assert "static" in repr(policy)
