"""What a simulation runs on: the machine and its devices, as plain validated data.

These are the ``[machine]`` and ``[[device]]`` tables of a scenario file (issue 4, §3), kept
free of behaviour so that a scenario can be written, compared and hashed before anything is
built. :class:`~swiotlb.sim.simulation.Simulation` turns them into a
:class:`~swiotlb.dma.Machine` and its devices.
"""

from __future__ import annotations

from dataclasses import dataclass

from swiotlb.core import PROFILES
from swiotlb.core.sizing import parse_size

NS_PER_S = 1_000_000_000
MAX_DMA_BITS = 64


@dataclass(frozen=True)
class MachineSpec:
    """A guest: RAM, CPUs, page size, confidential or not, kernel generation and command line.

    ``ram`` is bytes (``parse_size`` forms such as ``"64G"`` are accepted and normalised).
    ``cmdline`` is the kernel command line: ``swiotlb=`` sizes the boot pool as the kernel
    would (spec §1). ``zone_dma_bits`` (None: the architecture's default) and ``cma``
    (``(start, size)`` regions) shape the memory dynamic policies grow into.
    """

    ram: int = 8 << 30
    cpus: int = 8
    page_size: int = 4096
    coco: bool = False
    profile: str = "v6.12"
    cmdline: str = ""
    arch: str = "x86_64"
    zone_dma_bits: int | None = None
    cma: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ram", parse_size(self.ram))
        if self.ram < 16 << 20:
            raise ValueError(f"machine.ram = {self.ram}: a guest needs at least 16 MiB")
        if not 1 <= self.cpus <= 4096:
            raise ValueError(f"machine.cpus = {self.cpus}: expected 1..4096")
        if self.page_size not in (4096, 16384, 65536):
            raise ValueError(f"machine.page_size = {self.page_size}: expected 4096, 16384 or 65536")
        if self.profile not in PROFILES:
            raise ValueError(f"machine.profile = {self.profile!r}: expected one of {', '.join(sorted(PROFILES))}")
        if self.arch not in ("x86_64", "arm64"):
            raise ValueError(f"machine.arch = {self.arch!r}: expected 'x86_64' or 'arm64'")
        if self.zone_dma_bits is not None and not 20 <= self.zone_dma_bits <= 40:
            raise ValueError(f"machine.zone_dma_bits = {self.zone_dma_bits}: expected 20..40")
        cma = tuple((parse_size(s), parse_size(n)) for s, n in self.cma)
        object.__setattr__(self, "cma", cma)


@dataclass(frozen=True)
class DeviceSpec:
    """A DMA device: addressing limits, alignment needs, and how long it takes to serve a request.

    ``dma_bits`` gives ``dma_mask = 2**dma_bits - 1`` (30 for the Raspberry Pi 4's vc4, 32 for
    xhci on it, 64 for virtio with ACCESS_PLATFORM). ``min_align_mask`` is 0xFFF for NVMe
    (spec §3.3). The service time of a request of ``n`` bytes is ``latency_ns`` plus ``n``
    bytes at ``bandwidth`` bytes per second (0: no transfer-time term), the time from the
    map to the completion that unmaps it. ``latency_jitter_ns`` adds to each request a whole
    number of ns drawn uniformly from ``[0, latency_jitter_ns]`` from the workload's own
    ``<workload>/jitter`` stream: no device serves two requests in exactly the same time, and
    without that spread closed-loop jobs that start together fall into lock-step after their
    first round and stop contending for the area locks (S11).
    """

    name: str
    dma_bits: int = 64
    bus_dma_limit: int = 0
    min_align_mask: int = 0
    seg_boundary_mask: int = 0xFFFFFFFF
    latency_ns: int = 10_000
    bandwidth: int = 0
    coherent: bool = True
    latency_jitter_ns: int = 0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("device.name must not be empty")
        if not 12 <= self.dma_bits <= MAX_DMA_BITS:
            raise ValueError(f"device {self.name!r}: dma_bits = {self.dma_bits}: expected 12..64")
        if self.latency_ns < 0:
            raise ValueError(f"device {self.name!r}: latency_ns = {self.latency_ns}: must be >= 0")
        if self.latency_jitter_ns < 0:
            raise ValueError(f"device {self.name!r}: latency_jitter_ns = {self.latency_jitter_ns}: must be >= 0")
        if self.bandwidth < 0:
            raise ValueError(f"device {self.name!r}: bandwidth = {self.bandwidth}: must be >= 0")
        if self.seg_boundary_mask & (self.seg_boundary_mask + 1):
            raise ValueError(f"device {self.name!r}: seg_boundary_mask {self.seg_boundary_mask:#x} is not 2**k - 1")
        if not 0 <= self.min_align_mask <= 0xFFFFFFFF:
            raise ValueError(f"device {self.name!r}: min_align_mask {self.min_align_mask:#x} is not a 32-bit mask")

    @property
    def dma_mask(self) -> int:
        return (1 << self.dma_bits) - 1

    def service_ns(self, nbytes: int) -> int:
        """Time from map to completion for a request of ``nbytes`` (integer ns, rounded up)."""
        if self.bandwidth:
            return self.latency_ns + -(-nbytes * NS_PER_S // self.bandwidth)
        return self.latency_ns
