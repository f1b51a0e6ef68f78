"""Trace events of the DMA layer and the bus that publishes them.

Each event class mirrors one kernel tracepoint (spec §4.6; the ``dma:*`` events as printed by
the real 6.12 captures, /work/shared/traces/real/README.md "Line format"); ``name`` is the
tracepoint name and :meth:`format` renders the text after ``name:`` the way ftrace prints it.
Events are frozen so recorders can keep them as they are. Each carries the CPU that made the
call, which is what selects the swiotlb area.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, ClassVar, Union

from swiotlb.dma.types import DmaDirection, format_attrs

DMA_TRACE_MAX_ENTRIES = 128  # sg arrays are truncated to this many entries in the text


def _hexlist(values: tuple[int, ...]) -> str:
    return "{" + ",".join(f"{v:#x}" for v in values[:DMA_TRACE_MAX_ENTRIES]) + "}"


@dataclass(frozen=True, slots=True)
class SwiotlbBounced:
    """``swiotlb:swiotlb_bounced``: a bounce is attempted; emitted before the slot search.

    ``dev_addr`` is the DMA address of the *original* buffer; ``force`` says the device bounces
    because of ``swiotlb=force`` (or a CoCo guest) rather than because of its mask.
    """

    name: ClassVar[str] = "swiotlb_bounced"
    system: ClassVar[str] = "swiotlb"
    dev_name: str
    dma_mask: int
    dev_addr: int
    size: int
    force: bool
    cpu: int = 0

    def format(self) -> str:
        mode = "FORCE" if self.force else "NORMAL"
        return f"dev_name: {self.dev_name} dma_mask={self.dma_mask:x} dev_addr={self.dev_addr:x} size={self.size} {mode}"


@dataclass(frozen=True, slots=True)
class DmaMapPage:
    """``dma:dma_map_page``; a failed map has ``dma_addr == DMA_MAPPING_ERROR``."""

    name: ClassVar[str] = "dma_map_page"
    system: ClassVar[str] = "dma"
    dev_name: str
    dir: DmaDirection
    dma_addr: int
    size: int
    phys_addr: int
    attrs: int
    cpu: int = 0

    def format(self) -> str:
        return (
            f"{self.dev_name} dir={self.dir.name} dma_addr={self.dma_addr:x} size={self.size} "
            f"phys_addr={self.phys_addr:x} attrs={format_attrs(self.attrs)}"
        )


@dataclass(frozen=True, slots=True)
class DmaUnmapPage:
    """``dma:dma_unmap_page``: emitted after the slots are freed."""

    name: ClassVar[str] = "dma_unmap_page"
    system: ClassVar[str] = "dma"
    dev_name: str
    dir: DmaDirection
    dma_addr: int
    size: int
    attrs: int
    cpu: int = 0

    def format(self) -> str:
        return (
            f"{self.dev_name} dir={self.dir.name} dma_addr={self.dma_addr:x} size={self.size} "
            f"attrs={format_attrs(self.attrs)}"
        )


@dataclass(frozen=True, slots=True)
class DmaMapSg:
    """``dma:dma_map_sg``: emitted once, after every entry is mapped (none on failure)."""

    name: ClassVar[str] = "dma_map_sg"
    system: ClassVar[str] = "dma"
    dev_name: str
    dir: DmaDirection
    nents: int
    ents: int
    dma_addrs: tuple[int, ...]
    sizes: tuple[int, ...]
    phys_addrs: tuple[int, ...]
    attrs: int
    cpu: int = 0

    def format(self) -> str:
        m = DMA_TRACE_MAX_ENTRIES
        return (
            f"{self.dev_name} dir={self.dir.name} nents={min(self.nents, m)}/{self.nents} "
            f"ents={min(self.ents, m)}/{self.ents} dma_addrs={_hexlist(self.dma_addrs)} "
            f"sizes={_hexlist(self.sizes)} phys_addrs={_hexlist(self.phys_addrs)} "
            f"attrs={format_attrs(self.attrs)}"
        )


@dataclass(frozen=True, slots=True)
class DmaUnmapSg:
    """``dma:dma_unmap_sg``: emitted before the entries are freed; carries no DMA addresses."""

    name: ClassVar[str] = "dma_unmap_sg"
    system: ClassVar[str] = "dma"
    dev_name: str
    dir: DmaDirection
    phys_addrs: tuple[int, ...]
    attrs: int
    cpu: int = 0

    def format(self) -> str:
        return f"{self.dev_name} dir={self.dir.name} phys_addrs={_hexlist(self.phys_addrs)} attrs={format_attrs(self.attrs)}"


@dataclass(frozen=True, slots=True)
class DmaSyncSingleForCpu:
    """``dma:dma_sync_single_for_cpu``."""

    name: ClassVar[str] = "dma_sync_single_for_cpu"
    system: ClassVar[str] = "dma"
    dev_name: str
    dir: DmaDirection
    dma_addr: int
    size: int
    cpu: int = 0

    def format(self) -> str:
        return f"{self.dev_name} dir={self.dir.name} dma_addr={self.dma_addr:x} size={self.size}"


@dataclass(frozen=True, slots=True)
class DmaSyncSingleForDevice:
    """``dma:dma_sync_single_for_device``."""

    name: ClassVar[str] = "dma_sync_single_for_device"
    system: ClassVar[str] = "dma"
    dev_name: str
    dir: DmaDirection
    dma_addr: int
    size: int
    cpu: int = 0

    def format(self) -> str:
        return f"{self.dev_name} dir={self.dir.name} dma_addr={self.dma_addr:x} size={self.size}"


DmaEvent = Union[
    SwiotlbBounced,
    DmaMapPage,
    DmaUnmapPage,
    DmaMapSg,
    DmaUnmapSg,
    DmaSyncSingleForCpu,
    DmaSyncSingleForDevice,
]
Subscriber = Callable[[DmaEvent], None]

_log = logging.getLogger("swiotlb.events")


class Subscription:
    """Handle returned by :meth:`EventBus.subscribe`; call it (or use ``with``) to unsubscribe."""

    __slots__ = ("_bus", "_callback")

    def __init__(self, bus: EventBus, callback: Subscriber) -> None:
        self._bus: EventBus | None = bus
        self._callback = callback

    def unsubscribe(self) -> None:
        if self._bus is not None:
            self._bus._remove(self._callback)
            self._bus = None

    __call__ = unsubscribe

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unsubscribe()


class EventBus:
    """Synchronous publish/subscribe, in call order, on the thread that made the DMA call.

    ``subscribers`` is an immutable tuple replaced on change, so publishing takes no lock and
    the DMA layer can skip building events when it is empty. A subscriber that raises is
    logged (logger ``swiotlb.events``) and does not disturb the DMA operation in progress.
    """

    __slots__ = ("subscribers", "_lock")

    def __init__(self) -> None:
        self.subscribers: tuple[Subscriber, ...] = ()
        self._lock = threading.Lock()

    def subscribe(self, callback: Subscriber) -> Subscription:
        with self._lock:
            self.subscribers = self.subscribers + (callback,)
        return Subscription(self, callback)

    def _remove(self, callback: Subscriber) -> None:
        with self._lock:
            subs = list(self.subscribers)
            for i, cb in enumerate(subs):
                if cb is callback:
                    del subs[i]
                    break
            self.subscribers = tuple(subs)

    def publish(self, event: DmaEvent) -> None:
        for callback in self.subscribers:
            try:
                callback(event)
            except Exception:
                _log.exception("event subscriber %r failed on %s", callback, event.name)
