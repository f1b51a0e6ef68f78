"""The fixed boot pool: Linux <= 6.5, or 6.6+ without CONFIG_SWIOTLB_DYNAMIC (spec §1.5, §3).

One pool allocated at boot, never grown or shrunk; a failed search is final. This is the
configuration of the real 6.12 captures (``# CONFIG_SWIOTLB_DYNAMIC is not set``).
"""

from __future__ import annotations

from typing import ClassVar

from swiotlb._mypyc import mypyc_attr
from swiotlb.core import IoTlbMem, IoTlbPool, MapRefused, SlotMapping
from swiotlb.policies.base import BouncePolicy, PolicyDevice


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassed outside the mypyc build
class StaticPolicy(BouncePolicy):
    """A pass-through to :class:`~swiotlb.core.IoTlbMem` with no fallback on failure."""

    name: ClassVar[str] = "static"
    allocates: ClassVar[bool] = False

    def __init__(self, mem: IoTlbMem, env: object | None = None) -> None:
        if mem.dynamic:
            raise ValueError("the static policy models a kernel without CONFIG_SWIOTLB_DYNAMIC; mem is dynamic")
        super().__init__(mem)
        self._search = mem.tbl_map_single
        self._release = mem.release_slots

    def map(
        self,
        dev: PolicyDevice,
        orig_addr: int,
        size: int,
        alloc_align_mask: int = 0,
        *,
        cpu: int = 0,
        may_sleep: bool = False,
        attrs: int = 0,
        alloc_size: int | None = None,
    ) -> SlotMapping | MapRefused:
        """:meth:`BouncePolicy.map` without the extra call layer (the hot path of every bounce)."""
        found = self._search(dev, orig_addr, size, alloc_align_mask, cpu=cpu, alloc_size=alloc_size)
        if type(found) is MapRefused:
            return self.on_map_failure(
                dev, orig_addr, size, alloc_align_mask, found, cpu=cpu, may_sleep=may_sleep, attrs=attrs
            )
        return found

    def search(
        self,
        dev: PolicyDevice,
        orig_addr: int,
        size: int,
        alloc_align_mask: int,
        *,
        cpu: int,
        alloc_size: int | None,
    ) -> SlotMapping | MapRefused:
        """``swiotlb_tbl_map_single`` on the boot pool (§3.1)."""
        return self._search(dev, orig_addr, size, alloc_align_mask, cpu=cpu, alloc_size=alloc_size)

    def release(self, dev: PolicyDevice, tlb_addr: int, pool: IoTlbPool | None = None) -> int:
        """``swiotlb_release_slots`` (§3.6)."""
        return self._release(dev, tlb_addr, pool)
