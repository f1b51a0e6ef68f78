"""Machines with a policy other than the static pool: boot, growth and the seed's cases."""

from __future__ import annotations

import random

import pytest

from swiotlb import DmaDirection, DmaMappingError, Machine, dma_bit_mask

GIB = 1 << 30
TO, FROM = DmaDirection.TO_DEVICE, DmaDirection.FROM_DEVICE
FULLHD, UHD = 8_294_400, 35_389_440  # Raspberry Pi 4 dma-buf frames (scenarios S4)


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def test_unknown_policy_is_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match="known policies: .*linux-6.6.*static"):
        Machine("2G", cmdline="swiotlb=force", policy="no-such-policy")


def test_cpu_buffers_come_from_the_page_allocator_and_can_be_freed() -> None:
    m = Machine("2G")
    free = m.pages.free_bytes()
    buf = m.alloc(10_000, limit=GIB - 1)
    assert buf.phys_addr + buf.size <= GIB and m.pages.free_bytes() == free - 16384
    buf.free()
    assert m.pages.free_bytes() == free
    big = m.alloc(16 << 20)  # above MAX_PAGE_ORDER: a contiguous allocation
    big.free()
    assert m.pages.free_bytes() == free


def test_linux66_machine_grows_when_the_boot_pool_is_full() -> None:
    clock = Clock()
    m = Machine("4G", cmdline="swiotlb=1024,force", policy="linux-6.6", clock=clock)
    dev = m.add_device("virtio")
    bufs = [m.alloc(256 << 10) for _ in range(9)]
    dmas = [dev.map_single(b, 256 << 10, TO) for b in bufs[:8]]  # fills the 2 MiB pool
    extra = dev.map_single(bufs[8], 64 << 10, TO)  # served by a transient pool
    assert m.stats["io_tlb_transient_nslabs"] == 32
    assert dev.dma_read(extra, 16) == bufs[8].read(0, 16)
    dev.unmap(extra, 64 << 10, TO)
    assert m.stats["io_tlb_transient_nslabs"] == 0
    clock.now = 10**9
    assert m.run_deferred() == 1
    assert m.stats["io_tlb_nslabs"] == 2048 and len(m.mem.pools) == 2
    again = dev.map_single(bufs[8], 64 << 10, TO)
    assert m.mem.find_pool(again) is m.mem.pools[0]
    for d, b in zip(dmas, bufs):
        dev.unmap(d, 256 << 10, TO)


def test_confidential_guest_decrypts_per_pool_not_per_mapping() -> None:
    """Scenario S1: every streaming mapping bounces; shared-memory conversions happen for the
    boot pool and each grown pool, never for a single mapping."""
    clock = Clock()
    m = Machine("8G", cpus=2, coco=True, cmdline="swiotlb=1024", policy="linux-6.6", clock=clock)
    dev = m.add_device("virtio-blk")
    assert m.mem.force_bounce
    boot_decrypts = m.encryption.stats.decrypt_ops
    buf = m.alloc(4096)
    for _ in range(50):
        dma = dev.map_single(buf, 4096, TO)
        assert m.mem.find_pool(dma) is not None
        dev.unmap(dma, 4096, TO)
    assert m.encryption.stats.decrypt_ops == boot_decrypts
    held = [dev.map_single(m.alloc(256 << 10), 256 << 10, TO) for _ in range(8)]
    dev.map_single(m.alloc(8192), 8192, TO)  # transient, from the pre-decrypted atomic pool
    assert m.encryption.stats.decrypt_ops == boot_decrypts
    clock.now = 10**9
    m.run_deferred()
    assert m.encryption.stats.decrypt_ops == boot_decrypts + 1  # the grown pool, once
    assert len(held) == 8


@pytest.mark.parametrize("policy", ["static", "linux-6.6"])
@pytest.mark.parametrize("size", [FULLHD, UHD])
def test_raspberry_pi_4_frames_are_too_large_for_slot_pools(policy: str, size: int) -> None:
    """Scenario S4: a 30-bit vc4 device cannot map an 8-34 MiB frame through 256 KiB slots."""
    m = Machine("8G", cpus=4, arch="arm64", zone_dma_bits=30, policy=policy,
                cma=[(256 << 20, 512 << 20)])
    assert m.pool is not None and m.pool.end <= GIB  # arm64 places the pool in ZONE_DMA
    vc4 = m.add_device("vc4", dma_mask=dma_bit_mask(30))
    frame = 5 * GIB  # a frame the GPU (v3d, 16 GiB window) rendered high in RAM
    m.memory.write(frame, b"\x5a" * 4096)
    with pytest.raises(DmaMappingError) as info:
        vc4.map_single(frame, size, TO, may_sleep=True)
    assert info.value.cause == "too_large"
    assert m.mem.total_used == 0


def test_lending_machine_reserves_its_region_at_boot() -> None:
    """The lending region is set aside like a CMA area, below the boot pool's limit, and its
    free pages are lent to movable memory until bouncing claims them."""
    m = Machine("8G", cpus=2, cmdline="swiotlb=force", policy="lending")
    start, nbytes = m.config.options.get("region_start"), m.config.options.get("region_bytes")
    opts = m._policy_options
    assert opts["region_bytes"] == 64 << 20 and opts["region_start"] + opts["region_bytes"] <= 4 * GIB
    assert m.pages.in_cma(opts["region_start"])
    assert start is None and nbytes is None  # the config keeps what the user asked for
    dev = m.add_device("virtio")
    buf = m.alloc(4096)
    dma = dev.map_single(buf, 4096, TO)
    dev.unmap(dma, 4096, TO)


def rpi4(policy: str) -> Machine:
    """Scenario S4: 8 GiB, ZONE_DMA = the first GiB (vc4's reach), 512 MiB of CMA inside it."""
    return Machine("8G", cpus=4, arch="arm64", zone_dma_bits=30, policy=policy,
                   cma=[(256 << 20, 512 << 20)], cmdline="")


@pytest.mark.parametrize("policy", ["rfc-v1", "adaptive"])
@pytest.mark.parametrize("size", [FULLHD, UHD])
def test_raspberry_pi_4_frames_bounce_through_buffers_below_1gib(policy: str, size: int) -> None:
    """Scenario S4 end to end: a sleeping vc4 caller maps a frame rendered at 5 GiB; the bounce
    buffer lies below 1 GiB and the bytes reach the device, and device writes reach the CPU."""
    m = rpi4(policy)
    vc4 = m.add_device("vc4", dma_mask=dma_bit_mask(30))
    rng = random.Random(size)
    frame, back = 5 * GIB, 6 * GIB
    pixels = rng.randbytes(size)
    m.memory.write(frame, pixels)
    dma = vc4.map_single(frame, size, TO, may_sleep=True)
    assert dma != frame and dma + size <= GIB
    assert vc4.dma_read(dma, size) == pixels  # copied in at map time
    scanout = vc4.map_single(back, size, FROM, may_sleep=True)  # a frame the device fills
    assert scanout + size <= GIB and not (scanout < dma + size and dma < scanout + size)
    written = rng.randbytes(size)
    vc4.dma_write(scanout, written)
    vc4.unmap(scanout, size, FROM)
    assert m.memory.read(back, size) == written  # copied back at unmap
    vc4.unmap(dma, size, TO)
    assert vc4.live_mappings() == [] and m.mem.total_used == 0
    stats = m.policy.stats()
    prefix = "dyn_" if policy == "rfc-v1" else "large_"
    assert stats[prefix + "created"] == stats[prefix + "freed"] == 2 and stats[prefix + "bytes"] == 0
    with pytest.raises(DmaMappingError) as info:  # atomic: no CMA, and no slot run holds a frame
        vc4.map_single(frame, size, TO)
    assert info.value.cause == "too_large"


def test_lending_without_a_boot_pool_says_so() -> None:
    from swiotlb.policies.config import ConfigError

    with pytest.raises(ConfigError, match="needs a bounce pool, but this machine plans none"):
        Machine("2G", policy="lending")


def test_unmap_keeps_its_record_when_the_release_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Machine("2G", cmdline="swiotlb=force")
    dev = m.add_device("virtio")
    buf = m.alloc(4096)
    dma = dev.map_single(buf, 4096, TO)

    def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("release failed")

    monkeypatch.setattr(m.policy, "release", broken)
    with pytest.raises(RuntimeError):
        dev.unmap(dma, 4096, TO)
    assert [mp.dma_addr for mp in dev.live_mappings()] == [dma]
    monkeypatch.undo()
    dev.unmap(dma, 4096, TO)
    assert dev.live_mappings() == [] and m.mem.total_used == 0
