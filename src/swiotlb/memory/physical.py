"""Guest physical memory holding real bytes, stored sparsely page by page.

The DMA layer copies real bytes between original buffers and bounce slots (spec §4.1, §4.2), so
the model needs RAM that can be read and written. A 16 GiB guest must not cost 16 GiB of host
memory: a page is a ``bytearray`` created on its first write, and pages never written read as
zeros. Page creation uses ``dict.setdefault``, which is atomic under the GIL, so threads mapping
different buffers at once never lose a write; concurrent writes to the *same* bytes are the
caller's race, exactly as on real hardware.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping


class MemoryAccessError(IndexError):
    """An access outside ``[0, size)``; the message names the offending address range."""


@dataclass(frozen=True, slots=True)
class MemorySnapshot:
    """The non-zero pages of a :class:`PhysicalMemory` at one instant (page number -> bytes).

    Two snapshots compare equal exactly when every byte of the two memories is equal, because
    all-zero pages are left out on both sides.
    """

    page_size: int
    pages: Mapping[int, bytes]

    def diff(self, other: MemorySnapshot) -> list[int]:
        """Page numbers whose contents differ between the two snapshots, sorted."""
        keys = set(self.pages) | set(other.pages)
        return sorted(k for k in keys if self.pages.get(k) != other.pages.get(k))


class PhysicalMemory:
    """``size_bytes`` of byte-addressable RAM starting at physical address 0."""

    __slots__ = ("size", "page_size", "_shift", "_mask", "_pages", "_zero")

    def __init__(self, size_bytes: int, page_size: int = 4096) -> None:
        if page_size <= 0 or page_size & (page_size - 1):
            raise ValueError(f"page size {page_size} is not a power of two")
        if size_bytes <= 0 or size_bytes % page_size:
            raise ValueError(f"memory size {size_bytes} is not a positive multiple of the page size {page_size}")
        self.size = size_bytes
        self.page_size = page_size
        self._shift = page_size.bit_length() - 1
        self._mask = page_size - 1
        self._pages: dict[int, bytearray] = {}
        self._zero = bytes(page_size)

    # -- checks ----------------------------------------------------------------------------
    def check_range(self, addr: int, n: int) -> None:
        """Raise :class:`MemoryAccessError` unless ``[addr, addr + n)`` lies inside RAM."""
        if addr < 0 or n < 0 or addr + n > self.size:
            raise MemoryAccessError(
                f"physical access [{addr:#x}, {addr + n:#x}) is outside RAM [0, {self.size:#x})"
            )

    # -- byte access -----------------------------------------------------------------------
    def read(self, addr: int, n: int) -> bytes:
        """``n`` bytes at ``addr``; never-written bytes read as zero."""
        if addr < 0 or n < 0 or addr + n > self.size:
            self.check_range(addr, n)
        pno = addr >> self._shift
        off = addr & self._mask
        ps = self.page_size
        pages = self._pages
        if off + n <= ps:
            page = pages.get(pno)
            return bytes(n) if page is None else bytes(page[off : off + n])
        out = bytearray(n)
        pos = 0
        while pos < n:
            chunk = min(ps - off, n - pos)
            page = pages.get(pno)
            if page is not None:
                out[pos : pos + chunk] = page[off : off + chunk]
            pos += chunk
            pno += 1
            off = 0
        return bytes(out)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at ``addr``, creating pages as needed."""
        if type(data) is memoryview:
            data = data.cast("B")
        n = len(data)
        if addr < 0 or addr + n > self.size:
            self.check_range(addr, n)
        pno = addr >> self._shift
        off = addr & self._mask
        ps = self.page_size
        pages = self._pages
        if off + n <= ps:
            page = pages.get(pno)
            if page is None:
                page = pages.setdefault(pno, bytearray(ps))
            page[off : off + n] = data
            return
        view = memoryview(data)
        pos = 0
        while pos < n:
            chunk = min(ps - off, n - pos)
            page = pages.get(pno)
            if page is None:
                page = pages.setdefault(pno, bytearray(ps))
            page[off : off + chunk] = view[pos : pos + chunk]
            pos += chunk
            pno += 1
            off = 0

    def copy(self, dst: int, src: int, n: int) -> None:
        """Copy ``n`` bytes from ``src`` to ``dst`` with memmove semantics (overlap allowed).

        Disjoint ranges (every bounce copy) go page to page without an intermediate buffer.
        """
        size = self.size
        if dst < 0 or src < 0 or n < 0 or dst + n > size or src + n > size:
            self.check_range(src, n)
            self.check_range(dst, n)
        if src < dst + n and dst < src + n:
            if dst != src:
                self.write(dst, self.read(src, n))
            return
        pages = self._pages
        shift = self._shift
        mask = self._mask
        ps = self.page_size
        while n > 0:
            soff = src & mask
            doff = dst & mask
            chunk = ps - (soff if soff > doff else doff)
            if chunk > n:
                chunk = n
            spage = pages.get(src >> shift)
            dno = dst >> shift
            dpage = pages.get(dno)
            if spage is not None:
                if dpage is None:
                    dpage = pages.setdefault(dno, bytearray(ps))
                dpage[doff : doff + chunk] = spage[soff : soff + chunk]
            elif dpage is not None:
                dpage[doff : doff + chunk] = bytes(chunk)
            src += chunk
            dst += chunk
            n -= chunk

    def fill(self, addr: int, n: int, value: int = 0) -> None:
        """Set ``n`` bytes at ``addr`` to ``value`` (zero-fill drops whole untouched pages lazily)."""
        if not 0 <= value <= 255:
            raise ValueError(f"fill value {value} is not a byte")
        self.check_range(addr, n)
        pno = addr >> self._shift
        off = addr & self._mask
        ps = self.page_size
        pos = 0
        while pos < n:
            chunk = min(ps - off, n - pos)
            page = self._pages.get(pno)
            if value == 0 and chunk == ps:
                self._pages.pop(pno, None)  # a whole zero page is the same as no page
            elif page is not None or value:
                if page is None:
                    page = self._pages.setdefault(pno, bytearray(ps))
                page[off : off + chunk] = bytes([value]) * chunk
            pos += chunk
            pno += 1
            off = 0

    # -- inspection for tests --------------------------------------------------------------
    @property
    def resident_bytes(self) -> int:
        """Host bytes held for page contents (pages ever written)."""
        return len(self._pages) * self.page_size

    def touched_pages(self) -> list[int]:
        """Page numbers that have backing storage, sorted."""
        return sorted(self._pages)

    def snapshot(self) -> MemorySnapshot:
        """A copy of every non-zero page, for before/after comparisons in tests."""
        zero = self._zero
        pages = {p: bytes(b) for p, b in list(self._pages.items())}
        return MemorySnapshot(self.page_size, {p: b for p, b in pages.items() if b != zero})

    def digest(self) -> str:
        """A SHA-256 over the non-zero pages: a cheap equality token for large memories."""
        h = hashlib.sha256()
        zero = self._zero
        for pno in sorted(self._pages):
            page = bytes(self._pages[pno])
            if page != zero:
                h.update(pno.to_bytes(8, "little"))
                h.update(page)
        return h.hexdigest()

    def __repr__(self) -> str:
        return (
            f"PhysicalMemory(size={self.size:#x}, page_size={self.page_size}, "
            f"resident={self.resident_bytes:#x})"
        )
