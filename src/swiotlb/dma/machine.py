"""The public facade: a machine with RAM, a boot-time bounce pool, devices and CPU buffers.

Boot follows spec §1.5: the default pool is sized by :func:`swiotlb.core.sizing.plan_boot_pool`
(x86: a pool when RAM reaches above 4 GiB, in CoCo guests, or with ``swiotlb=force``) and placed
by the range allocator in low memory (below 4 GiB; anywhere in a CoCo guest, SWIOTLB_ANY). The
first 1 MiB of RAM is reserved, as x86 reserves it for firmware, so no buffer sits at address 0.
The policy (``static`` unless ``policy=`` or ``swiotlb.policy=`` says otherwise) owns the pool
and grows, shrinks or bypasses it from the page allocator that takes over the rest of RAM.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterable, Mapping

from swiotlb.core import IoTlbMem, IoTlbPool, KernelProfile, get_profile
from swiotlb.core.constants import IO_TLB_SHIFT, U64_MASK
from swiotlb.core.sizing import PoolPlan, fit_nareas, parse_size, plan_boot_pool, x86_needs_swiotlb
from swiotlb.dma.device import DEFAULT_MAX_SEGMENT_SIZE, PCI_SEG_BOUNDARY_MASK, Device
from swiotlb.dma.direct import DmaDirect
from swiotlb.dma.events import EventBus
from swiotlb.dma.ratelimit import Clock
from swiotlb.dma.types import dma_bit_mask
from swiotlb.memory import (
    GFP_KERNEL,
    CmaRegion,
    MemoryEncryption,
    OutOfMemory,
    PageAllocator,
    PhysicalMemory,
    RangeAllocator,
    ZoneLayout,
)
from swiotlb.policies import BouncePolicy, make_policy, policy_class
from swiotlb.policies.config import BounceConfig, ConfigError
from swiotlb.policies.env import PolicyEnv

log = logging.getLogger("swiotlb")

LOW_RESERVED = 1 << 20  # x86 keeps the first 1 MiB for firmware
LOW_MEMORY_LIMIT = (1 << 32) - 1  # ARCH_LOW_ADDRESS_LIMIT: memblock_alloc_low stays below 4 GiB

class CpuBuffer:
    """A CPU-owned buffer in guest RAM (what a driver would kmalloc or get from the page allocator)."""

    __slots__ = ("phys_addr", "size", "_machine")

    def __init__(self, machine: Machine, phys_addr: int, size: int) -> None:
        self.phys_addr = phys_addr
        self.size = size
        self._machine = machine

    def _span(self, offset: int, n: int) -> None:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise IndexError(
                f"buffer at {self.phys_addr:#x} holds {self.size} bytes; [{offset}, {offset + n}) is outside it"
            )

    def read(self, offset: int = 0, n: int | None = None) -> bytes:
        n = self.size - offset if n is None else n
        self._span(offset, n)
        return self._machine.memory.read(self.phys_addr + offset, n)

    def write(self, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        self._span(offset, len(data))
        self._machine.memory.write(self.phys_addr + offset, data)

    def fill(self, value: int = 0) -> None:
        self._machine.memory.fill(self.phys_addr, self.size, value)

    def free(self) -> None:
        self._machine.free(self)

    def __repr__(self) -> str:
        return f"CpuBuffer(phys_addr={self.phys_addr:#x}, size={self.size})"


class Machine:
    """A guest: RAM, CPUs, a kernel profile, the boot bounce pool, devices.

    ``cmdline`` is a kernel command line (only ``swiotlb=`` matters). ``clock`` returns
    nanoseconds and drives message rate limits and policies' timers (default
    ``time.monotonic_ns``). ``reserved`` lists extra ``(start, size)`` ranges taken out of RAM
    before the pool is placed (firmware holes), which also lets a test push the pool above a
    device's reach.

    Boot order: memblock (:class:`~swiotlb.memory.RangeAllocator`) places the pool, then the
    page allocator (zones, buddy, CMA) takes over the rest of RAM; CPU buffers and every pool
    a dynamic ``policy`` grows come from it. ``zone_dma_bits`` sets ZONE_DMA (24 on x86, 30
    on a Raspberry Pi 4); on arm64 the boot pool goes below that limit, as
    ``arm64_dma_phys_limit`` puts it. ``cma`` lists ``(start, size)`` CMA regions.
    ``count_steps`` makes the allocator, and every allocator the policy adds, count the
    kernel's steps into ``machine.mem.steps``, which the simulator prices; the policy's page
    allocations are counted there too (``page_alloc_order_<k>``).
    """

    def __init__(
        self,
        ram: int | str = "2G",
        cpus: int = 1,
        page_size: int = 4096,
        coco: bool = False,
        profile: str | KernelProfile = "v6.12",
        cmdline: str = "",
        arch: str = "x86_64",
        clock: Clock | None = None,
        *,
        reserved: Iterable[tuple[int, int]] = (),
        policy: str | None = None,
        policy_options: Mapping[str, Any] | None = None,
        zone_dma_bits: int | None = None,
        cma: Iterable[tuple[int, int]] = (),
        count_steps: bool = False,
    ) -> None:
        ram_bytes = parse_size(ram)
        reserved = list(reserved)
        if zone_dma_bits is None:
            zone_dma_bits = 24 if arch == "x86_64" else 30
        kernel = get_profile(profile)
        if cpus < 1:
            raise ValueError(f"a machine needs at least one CPU, got cpus={cpus}")
        self.cpus = cpus
        self.coco = coco
        self.arch = arch
        self.clock: Clock = clock if clock is not None else time.monotonic_ns
        self.memory = PhysicalMemory(ram_bytes, page_size)
        self.ranges = RangeAllocator(ram_bytes, page_size=page_size)
        self.ranges.reserve(0, LOW_RESERVED)
        for start, size in reserved:
            self.ranges.reserve(start, size)
        self.events = EventBus()
        self.zone_dma_bits = zone_dma_bits
        if policy is None:  # swiotlb.policy= and swiotlb.KNOB= on the command line, else static
            config = BounceConfig.from_cmdline(cmdline)
            if policy_options:
                config = BounceConfig(config.policy, {**config.options, **policy_options})
        else:
            config = BounceConfig(policy, dict(policy_options or {}))
        config.validate(cmdline)
        self.config = config
        self._policy_class = policy_class(config.policy)
        self._policy_options = dict(config.options)
        self.plan, pool_start = self._boot_pool(ram_bytes, cmdline, page_size)
        pool_bytes = self._boot_slabs << IO_TLB_SHIFT if self.plan.enabled else 0
        cma = list(cma)
        region_size = getattr(self._policy_class, "region_size", None)
        if callable(region_size) and not self.plan.enabled and "region_start" not in self._policy_options:
            raise ConfigError(
                f"policy {config.policy!r} needs a bounce pool, but this machine plans none "
                "(add swiotlb=force, or give it RAM above the DMA limit)"
            )
        if self.plan.enabled and callable(region_size) and "region_start" not in self._policy_options:
            # a lending policy's region: reserved at boot like a CMA area, below the pool's limit
            nbytes = region_size(self.plan.nslabs, **self._policy_options)
            start = self.ranges.alloc(nbytes, 4 << 20, self._boot_limit, top_down=True)
            cma.append((start, nbytes))
            self._policy_options.update(region_start=start, region_bytes=nbytes)
        boot_taken = [(0, LOW_RESERVED), *reserved] + ([(pool_start, pool_bytes)] if pool_bytes else [])
        self.pages = PageAllocator(
            ZoneLayout(ram_bytes, page_size=page_size, dma_bits=zone_dma_bits),
            reserved=boot_taken, cma=[CmaRegion(start, size) for start, size in cma],
        )
        self.encryption = MemoryEncryption(coco, page_size=page_size)
        if coco and pool_bytes:  # swiotlb_update_mem_attributes: the boot pool is shared once
            self.encryption.set_decrypted(pool_start, pool_bytes // page_size, may_sleep=True)
        self.env = PolicyEnv(self.pages, self.encryption, clock=self.clock)
        self._cpu_buffers: dict[int, int] = {}  # phys -> order (-1: contiguous allocation)
        pools = []
        nareas = self.plan.nareas if kernel.areas else 1  # <= 5.19: one lock, no areas
        if self.plan.enabled:
            nslabs = self._boot_slabs
            pools.append(IoTlbPool(pool_start, nslabs, fit_nareas(nareas, nslabs), name="default"))
        mem = IoTlbMem(
            pools, kernel, page_size=page_size, force_bounce=self.plan.force_bounce,
            default_nareas=nareas or None,
            # where grown pools may live: ARCH_LOW_ADDRESS_LIMIT, anywhere with SWIOTLB_ANY (§1.5)
            phys_limit=self._boot_limit if self._boot_limit is not None else U64_MASK,
            count_steps=count_steps,
        )
        self.env.steps = mem.steps  # the policy's page allocations join the same tally
        self.policy: BouncePolicy = make_policy(config.policy, mem, self.env, **self._policy_options)
        self.dma = DmaDirect(self.memory, self.policy, self.events, clock=self.clock, coco=coco)
        self._devices: dict[str, Device] = {}
        self._lock = threading.Lock()

    def _boot_pool(self, ram_bytes: int, cmdline: str, page_size: int) -> tuple[PoolPlan, int]:
        """``swiotlb_init_remap``: size the pool, then take it from low memory (spec §1.5)."""
        if self.arch == "x86_64":
            needs = x86_needs_swiotlb(ram_bytes, self.coco)
            limit = None if self.coco else LOW_MEMORY_LIMIT
        else:  # arm64: bounce when RAM reaches past the DMA zone; the pool goes below it
            limit = (1 << self.zone_dma_bits) - 1 if self.zone_dma_bits else LOW_MEMORY_LIMIT
            needs = ram_bytes > limit + 1 or self.coco
        self._boot_limit = limit
        contiguous = self.ranges.largest_free(limit, page_size)

        def plan(pool_base: int | None = None) -> PoolPlan:
            return plan_boot_pool(
                ram_bytes=ram_bytes, possible_cpus=self.cpus, cmdline=cmdline, coco=self.coco, arch=self.arch,
                page_size=page_size, needs_bounce=needs, low_mem_contiguous=contiguous, any_memory=self.coco,
                pool_base=pool_base,
            )

        first = plan()
        if not first.enabled:
            for line in first.log:
                log.info("%s", line)
            return first, 0
        self._boot_slabs = self._policy_class.boot_nslabs(first.nslabs, **self._policy_options)
        start = self.ranges.alloc(self._boot_slabs << IO_TLB_SHIFT, page_size, limit, top_down=True)
        final = plan(start)  # the same plan, now with the address for the "mapped [mem ...]" line
        for line in final.log:
            log.info("%s", line)
        return final, start

    # -- properties ------------------------------------------------------------------------
    @property
    def mem(self) -> IoTlbMem:
        """The allocator (``io_tlb_mem``) of the machine's policy."""
        return self.policy.mem

    @property
    def profile(self) -> KernelProfile:
        return self.policy.mem.profile

    @property
    def stats(self) -> dict[str, int]:
        """The debugfs counters (``/sys/kernel/debug/swiotlb``), empty without a pool (spec §5.7)."""
        return self.policy.counters()

    @property
    def devices(self) -> dict[str, Device]:
        with self._lock:
            return dict(self._devices)

    @property
    def pool(self) -> IoTlbPool | None:
        """The default (boot) pool, or None."""
        pools = self.policy.mem.pools
        return pools[-1] if pools else None

    # -- devices ---------------------------------------------------------------------------
    def add_device(
        self,
        name: str,
        *,
        dma_mask: int = dma_bit_mask(64),
        bus_dma_limit: int = 0,
        min_align_mask: int = 0,
        seg_boundary_mask: int = PCI_SEG_BOUNDARY_MASK,
        coherent: bool = True,
        max_segment_size: int = DEFAULT_MAX_SEGMENT_SIZE,
    ) -> Device:
        dev = Device(
            name, dma_mask=dma_mask, bus_dma_limit=bus_dma_limit, min_align_mask=min_align_mask,
            seg_boundary_mask=seg_boundary_mask, coherent=coherent, max_segment_size=max_segment_size,
            engine=self.dma, on_remove=self._forget,
        )
        with self._lock:
            if name in self._devices:
                raise ValueError(f"a device named {name!r} already exists")
            self._devices[name] = dev
        self.policy.attach_device(dev)
        return dev

    def _forget(self, dev: Device) -> None:
        with self._lock:
            if self._devices.get(dev.name) is dev:
                del self._devices[dev.name]

    # -- CPU memory ------------------------------------------------------------------------
    def alloc(self, size: int, *, align: int | None = None, limit: int | None = None) -> CpuBuffer:
        """A CPU buffer of ``size`` bytes from the page allocator, ending at or below ``limit``.

        Buddy blocks are naturally aligned, so ``align`` (a power of two) only raises the order;
        buffers above MAX_PAGE_ORDER pages come from a contiguous allocation.
        """
        if size <= 0:
            raise ValueError(f"a CPU buffer needs a positive size, got {size}")
        pages = self.pages
        order = max(0, (-(-max(size, align or 1) // pages.page_size) - 1).bit_length())
        if order <= pages.max_order:
            phys = pages.alloc_pages(order, GFP_KERNEL, limit=limit, owner="cpu")
        else:
            phys = pages.alloc_contig(size, limit=limit, gfp=GFP_KERNEL, owner="cpu")
            order = -1
        if phys is None:
            below = "" if limit is None else f" below {limit:#x}"
            raise OutOfMemory(f"no free {size}-byte CPU buffer{below} (order {order})")
        with self._lock:
            self._cpu_buffers[phys] = order
        return CpuBuffer(self, phys, size)

    def free(self, buf: CpuBuffer) -> None:
        with self._lock:
            order = self._cpu_buffers.pop(buf.phys_addr, None)
        if order is None:
            raise ValueError(f"{buf!r} is not a live CPU buffer of this machine")
        if order < 0:
            self.pages.free_contig(buf.phys_addr)
        else:
            self.pages.free_pages(buf.phys_addr, order)

    def run_deferred(self) -> int:
        """Run the policy's due deferred work (a growth worker, deferred frees)."""
        return self.policy.run_deferred()

    def __repr__(self) -> str:
        pool = self.pool
        where = f"pool {pool.start:#x}-{pool.end:#x}" if pool else "no pool"
        return (
            f"Machine(ram={self.memory.size:#x}, cpus={self.cpus}, profile={self.profile.name}, "
            f"{where}, force={self.policy.mem.force_bounce})"
        )
