"""Slot search inside one area, and the bookkeeping of taking and freeing slot runs.

Two implementations of the same rules (spec §3.3, §3.4):

* :func:`search_area_literal` transcribes the kernel's loop probe by probe. It is the reference,
  used for unusual masks and by the tests as an oracle.
* :func:`search_area_fast` reaches the same answer without probing every slot. For masks of the
  form ``2**k - 1`` the aligned slots form an arithmetic progression, the counted loop visits
  them in at most two passes (cursor to area end, then from 0 until the budget of
  ``area_nslabs`` checks runs out), and each pass is a "first slot of this progression whose
  ``list`` is >= n" query answered by ``re`` over the ``list`` bytes, skipping segments through
  the per-area upper-bound index.

Everything here runs with the area lock held by the caller; nothing here allocates or waits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from swiotlb._mypyc import mypyc_attr
from swiotlb.core.constants import INVALID_PHYS_ADDR, IO_TLB_SEGSIZE, IO_TLB_SHIFT
from swiotlb.core.pool import SEGS_PER_BLOCK, IoTlbArea, IoTlbPool
from swiotlb.core.profiles import SearchMasks

_SEG_SHIFT = 7  # log2(IO_TLB_SEGSIZE)
_BLK_SHIFT = 6  # log2(SEGS_PER_BLOCK)
assert 1 << _SEG_SHIFT == IO_TLB_SEGSIZE and 1 << _BLK_SHIFT == SEGS_PER_BLOCK

# _AT_LEAST[n] finds the first byte >= n (n in 1..255).
_AT_LEAST: list[re.Pattern[bytes]] = [re.compile(b"[\\x00-\\xff]")] + [
    re.compile(b"[" + re.escape(bytes([n])) + b"-\\xff]") for n in range(1, 256)
]


@mypyc_attr(native_class=False)  # mypyc cannot subclass RuntimeError natively
class SearchDeadlock(RuntimeError):
    """The modelled kernel's do/while search would spin forever holding the lock (<= 6.2)."""


@mypyc_attr(native_class=False)
class PoolOverrun(RuntimeError):
    """The modelled kernel would allocate past the end of a pool (CVE-2023-52790, < 6.7)."""


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """One search, as the kernel computes it before taking an area lock."""

    nslots: int
    masks: SearchMasks
    orig_addr: int
    tbl_dma: int  # pool start in DMA space, masked by the segment boundary mask
    shift: int  # nr_slots(tbl_dma): window phase of slot 0
    max_slots: int  # slots per segment-boundary window (a power of two)


def alignment_progression(req: SearchRequest) -> tuple[int, int] | None:
    """:func:`progression` for a :class:`SearchRequest`."""
    return progression(req.masks.align_mask, req.masks.iotlb_mask, req.orig_addr, req.tbl_dma)


def _crosses(slot: int, req: SearchRequest) -> bool:
    return ((req.shift + slot) & (req.max_slots - 1)) + req.nslots > req.max_slots


def _is_aligned(slot: int, req: SearchRequest) -> bool:
    a = req.tbl_dma + (slot << IO_TLB_SHIFT)
    m = req.masks
    return not (a & m.align_mask) and not (
        req.orig_addr and (a & m.iotlb_mask) != (req.orig_addr & m.iotlb_mask)
    )


def search_area_literal(
    pool: IoTlbPool, area_index: int, req: SearchRequest, probes: list[int] | None = None
) -> int:
    """The >= 6.3 counted loop, probe by probe (spec §3.3). Returns a pool slot or -1.

    ``probes``, when given, gets the number of loop iterations (examined indices) added to
    its first element; a quick reject adds nothing.
    """
    area = pool.areas[area_index]
    n = req.nslots
    nslabs = pool.area_nslabs
    if n > nslabs - area.used:
        return -1
    base = area_index * nslabs
    index = area.index
    stride = req.masks.stride
    lst = pool.list
    checked = 0
    rejected = 0  # aligned probes that did not fit: each counted ``stride`` checks
    while checked < nslabs:
        slot = base + index
        if not _is_aligned(slot, req):
            index += 1
            if index >= nslabs:
                index = 0
            checked += 1
            continue
        if not _crosses(slot, req) and lst[slot] >= n:
            if probes is not None:
                probes[0] += checked - rejected * (stride - 1) + 1
            return slot
        index += stride
        if index >= nslabs:
            index = 0
        checked += stride
        rejected += 1
    if probes is not None:
        probes[0] += checked - rejected * (stride - 1)
    return -1


def search_area_wrap(
    pool: IoTlbPool, area_index: int, req: SearchRequest, probes: list[int] | None = None
) -> int:
    """The <= 6.2 do/while loop that stops when it comes back to its start (spec §3.4).

    ``probes``, when given, gets the number of loop iterations added to its first element.
    """
    area = pool.areas[area_index]
    n = req.nslots
    nslabs = pool.area_nslabs
    if n > nslabs - area.used:
        return -1
    base = area_index * nslabs
    stride = req.masks.stride
    index = -(-area.index // stride) * stride
    if index >= nslabs:
        index = 0
    wrap = index
    lst = pool.list
    for i in range(4 * nslabs + 4):
        slot = base + index
        if req.orig_addr and (
            (req.tbl_dma + (slot << IO_TLB_SHIFT)) & req.masks.iotlb_mask
        ) != (req.orig_addr & req.masks.iotlb_mask):
            index += 1
        else:
            if not _crosses(slot, req) and lst[slot] >= n:
                if probes is not None:
                    probes[0] += i + 1
                return slot
            index += stride
        if index >= nslabs:
            index = 0
        if index == wrap:
            if probes is not None:
                probes[0] += i + 1
            return -1
    raise SearchDeadlock(
        f"search for {n} slots (stride {stride}) never returns to its start index {wrap}: "
        "the modelled kernel would spin with the area lock held"
    )


def area_may_fit(area: IoTlbArea, n: int) -> bool:
    """False when the upper-bound index proves no free run of ``n`` slots exists in the area."""
    return _AT_LEAST[n].search(area.blkub) is not None if n <= 255 else False


def _next_segment(area: IoTlbArea, seg: int, last_seg: int, n: int) -> int:
    """First area segment in ``[seg, last_seg]`` whose upper bound is >= n, or -1.

    Blocks found to hold no segment bound >= n get their own bound lowered to ``n - 1``.
    """
    pat = _AT_LEAST[n]
    segub = area.segub
    blkub = area.blkub
    nsegs = len(segub)
    stop = last_seg + 1
    blk = seg >> _BLK_SHIFT
    last_blk = last_seg >> _BLK_SHIFT
    lo = seg
    while blk <= last_blk:
        if blkub[blk] >= n:
            blk_lo = blk << _BLK_SHIFT
            blk_hi = blk_lo + SEGS_PER_BLOCK
            if blk_hi > nsegs:
                blk_hi = nsegs
            m = pat.search(segub, lo, blk_hi if blk_hi < stop else stop)
            if m is not None:
                return m.start()
            if pat.search(segub, blk_lo, blk_hi) is None:
                blkub[blk] = n - 1  # every segment of the block is short of n
        blk += 1
        if blk > last_blk:
            break
        mb = pat.search(blkub, blk, last_blk + 1)
        if mb is None:
            return -1
        blk = mb.start()
        lo = blk << _BLK_SHIFT
    return -1


def _progression_find(
    lst: bytearray, area: IoTlbArea, base: int, nslabs: int, lo: int, hi: int, step: int, n: int
) -> int:
    """First area index ``p`` in ``lo, lo+step, ... < hi`` with ``list[p] >= n``, or -1.

    Walks the segments that may hold a run of ``n`` (per the upper-bound index); in each,
    one ``re`` search over the list bytes finds the first slot with a long enough run, and
    only if it is off the progression is the segment searched again with the stride.
    Segments found short of ``n`` get their bound lowered, so failures get cheaper.
    """
    pat = _AT_LEAST[n]
    segub = area.segub
    last_seg = (hi - 1) >> _SEG_SHIFT
    p = lo
    while p < hi:
        seg = p >> _SEG_SHIFT
        if segub[seg] < n:
            seg = _next_segment(area, seg + 1, last_seg, n)
            if seg < 0:
                return -1
            p += -(-((seg << _SEG_SHIFT) - p) // step) * step
            if p >= hi:
                return -1
            if p >> _SEG_SHIFT != seg:
                continue  # the step jumped past this segment
        seg_lo = seg << _SEG_SHIFT
        seg_hi = seg_lo + IO_TLB_SEGSIZE
        if seg_hi > nslabs:
            seg_hi = nslabs
        end = seg_hi if seg_hi < hi else hi
        m = pat.search(lst, base + p, base + end)
        if m is None:
            if (p == seg_lo or pat.search(lst, base + seg_lo, base + p) is None) and (
                end == seg_hi or pat.search(lst, base + end, base + seg_hi) is None
            ):
                segub[seg] = n - 1  # nothing in the whole segment is long enough
        else:
            first = m.start() - base
            if step == 1 or (first - p) % step == 0:
                return first
            p += -(-(first - p) // step) * step
            if p < end:
                m = pat.search(lst[base + p : base + end : step])
                if m is not None:
                    return p + m.start() * step
        if p < end:
            p += -(-(end - p) // step) * step
    return -1


def progression(align_mask: int, iotlb_mask: int, orig_addr: int, tbl_dma: int) -> tuple[int, int] | None:
    """``(Q, r)`` such that pool slot ``s`` is aligned iff ``s % Q == r``; None if no such form.

    Holds when the alignment mask is a low mask and the min-align bits compared with
    ``orig_addr`` are one contiguous run directly above it (every mask the kernel builds from
    ``2**k - 1`` masks).
    """
    if align_mask & (align_mask + 1):
        return None
    a_bits = align_mask.bit_length()
    if a_bits < IO_TLB_SHIFT:
        a_bits = IO_TLB_SHIFT
    if orig_addr and iotlb_mask:
        lo = (iotlb_mask & -iotlb_mask).bit_length() - 1
        hi = iotlb_mask.bit_length()
        if iotlb_mask != (1 << hi) - (1 << lo) or lo > a_bits or lo < IO_TLB_SHIFT or iotlb_mask & align_mask:
            return None
        top = a_bits if a_bits > hi else hi
        target = orig_addr & iotlb_mask
    else:
        top = a_bits
        target = 0
    q = 1 << (top - IO_TLB_SHIFT)
    return q, ((target - tbl_dma) >> IO_TLB_SHIFT) % q


def search_area_fast(pool: IoTlbPool, area_index: int, req: SearchRequest) -> int:
    """Same answer as :func:`search_area_literal`, without probing slot by slot."""
    prog = progression(req.masks.align_mask, req.masks.iotlb_mask, req.orig_addr, req.tbl_dma)
    if prog is None:
        return search_area_literal(pool, area_index, req)
    return fast_search(pool, area_index, req.nslots, prog[0], prog[1], req.masks.stride, req.shift, req.max_slots)


def fast_search(
    pool: IoTlbPool, area_index: int, n: int, q: int, r: int, stride: int, shift: int, window: int
) -> int:
    """The counted loop of spec §3.3 for aligned slots ``s % q == r``; a pool slot or -1.

    The loop visits aligned slots ``step`` apart from the first aligned slot at or after the
    cursor to the area end, wraps to 0 (not modulo), and stops once it has counted
    ``area_nslabs`` checks (a misaligned probe counts 1, an aligned one ``stride``). So it is
    at most two passes over an arithmetic progression, each cut short by the budget.
    """
    area = pool.areas[area_index]
    nslabs = pool.area_nslabs
    if n > nslabs - area.used or n > IO_TLB_SEGSIZE or n > window:
        return -1  # quick reject, or no free run is that long / every start crosses an edge
    base = area_index * nslabs
    index = area.index
    residue = (r - base) % q
    first = index + (residue - index) % q
    if first < nslabs and first - index < nslabs:
        # the common case: the first aligned probe already fits
        slot = base + first
        if pool.list[slot] >= n and ((shift + slot) & (window - 1)) + n <= window:
            return slot
    return search_past_cursor(pool, area_index, n, q, residue, stride, shift, window)


def search_past_cursor(
    pool: IoTlbPool, area_index: int, n: int, q: int, residue: int, stride: int, shift: int, window: int,
    looked: bool = False,
) -> int:
    """:func:`fast_search` after its quick reject and a first aligned probe that did not fit.

    ``residue`` is the alignment residue in area indices (``0 <= residue < q``). The allocator
    makes the quick reject and the first probe itself, then calls this directly; ``looked``
    says it has also consulted the upper-bound index, so this does not look again.
    """
    if n > IO_TLB_SEGSIZE or n > window:
        return -1  # no free run is that long, or every start crosses a window edge
    area = pool.areas[area_index]
    if n > 1 and not looked and _AT_LEAST[n].search(area.blkub) is None:
        return -1  # no block of this area can hold a run of n
    nslabs = pool.area_nslabs
    base = area_index * nslabs
    lst = pool.list
    index = area.index
    step = q * -(-stride // q)  # distance between consecutive aligned probes
    checked = 0
    while checked < nslabs:
        first = index + (residue - index) % q  # misaligned probes cost one check each
        if first >= nslabs:
            checked += nslabs - index
            index = 0
            continue
        checked += first - index
        if checked >= nslabs:
            return -1
        hi = nslabs if checked <= first else first + nslabs - checked  # budget limit
        p = _progression_find(lst, area, base, nslabs, first, hi, step, n)
        if p >= 0:
            if n > 1 and ((shift + base + p) & (window - 1)) + n > window:
                p = _fit_in_progression(lst, area, base, nslabs, p, hi, step, n, shift, window)
            if p >= 0:
                return base + p
        if hi < nslabs:
            return -1
        last = first + (nslabs - 1 - first) // step * step
        if last + stride >= nslabs:
            checked += last - first + stride
        else:
            checked += nslabs - first
        index = 0
    return -1


def kernel_probes(nslabs: int, index: int, residue: int, q: int, stride: int, found: int) -> int:
    """Iterations of the counted loop (spec §3.3) that ends at area index ``found`` (-1: fails).

    The loop starts at cursor ``index``; aligned indices are ``i % q == residue``. Derived from
    positions alone, in the passes of :func:`fast_search`: a misaligned walk costs one
    iteration (and one check) per index, up to the next aligned index or the area end (then
    wraps to 0). From an aligned candidate ``c`` the loop probes ``c``, jumps ``stride`` and
    walks ``step - stride`` misaligned indices to ``c + step`` (``step = q * ceil(stride/q)``):
    ``1 + step - stride`` iterations and ``step`` checks per candidate. Candidates are probed
    while the check count is below ``area_nslabs`` and the index inside the area; a jump past
    the end wraps to 0. ``found`` is the first candidate of a pass equal to it (the search
    reads the state only, so a fitting slot is taken the first time it is probed); a failure
    runs until the budget of ``area_nslabs`` checks is spent.
    """
    step = q * -(-stride // q)
    per = 1 + step - stride  # iterations per aligned candidate
    probes = checked = 0
    while checked < nslabs:
        first = index + (residue - index) % q
        if first > nslabs:
            first = nslabs  # walk to the area end, then wrap
        walk = first - index
        if checked + walk >= nslabs:
            return probes + nslabs - checked  # the budget ends inside the walk
        probes += walk
        checked += walk
        if first == nslabs:
            index = 0
            continue
        # candidates first + j*step for j = 0..last: inside the area and under the budget
        last = min((nslabs - 1 - first) // step, (nslabs - 1 - checked) // step)
        d = found - first
        if d >= 0 and d % step == 0 and d // step <= last:
            return probes + d // step * per + 1
        probes += last * per + 1
        checked += last * step + stride
        index = first + last * step + stride
        if index >= nslabs:
            index = 0
    return probes


def _fit_in_progression(
    lst: bytearray, area: IoTlbArea, base: int, nslabs: int, lo: int, hi: int, step: int, n: int,
    shift: int, window: int,
) -> int:
    """First progression member with a long enough free run that crosses no window edge."""
    p = lo
    while True:
        p = _progression_find(lst, area, base, nslabs, p, hi, step, n)
        if p < 0 or n == 1:
            return p
        phase = (shift + base + p) & (window - 1)
        if phase + n <= window:
            return p
        edge = p + window - phase  # every start before the edge crosses it too
        p += -(-(edge - p) // step) * step
        if p >= hi:
            return -1


# Byte strings reused by the hot paths: _ZEROS[n] is n zero bytes, _DESC[k] is k, k-1, ..., 1.
_ZEROS = [bytes(n) for n in range(IO_TLB_SEGSIZE + 1)]
_DESC = [memoryview(bytes(range(k, 0, -1))) for k in range(IO_TLB_SEGSIZE + 1)]


def take_slots(pool: IoTlbPool, area_index: int, slot: int, nslots: int, first_alloc_size: int) -> None:
    """Mark ``nslots`` slots from ``slot`` in use and fix the free run before them (spec §3.3).

    The allocation's ``alloc_size`` is recorded once, at its first slot (see
    :mod:`swiotlb.core.pool`); ``orig_addr`` stays invalid until the caller sets it.
    """
    end = slot + nslots
    if end > pool.nslabs:
        raise PoolOverrun(
            f"allocation of {nslots} slots at slot {slot} runs past the end of {pool!r}"
        )
    view = pool.view
    view[slot:end] = _ZEROS[nslots]
    pool.heads[slot] = 1  # head_pad is 0 here: free_slots resets it
    pool.head_alloc_size[slot] = first_alloc_size
    pool.head_nslots[slot] = nslots
    pool.head_orig_addr[slot] = INVALID_PHYS_ADDR
    seg_lo = slot & -IO_TLB_SEGSIZE
    if slot > seg_lo:
        run = pool.list.rfind(0, seg_lo, slot) + 1 or seg_lo
        if run < slot:
            view[run:slot] = _DESC[slot - run]
    area = pool.areas[area_index]
    index = slot - area_index * pool.area_nslabs + nslots
    area.index = 0 if index >= pool.area_nslabs else index
    area.used += nslots


def free_slots(pool: IoTlbPool, index: int, nslots: int) -> None:
    """Release ``nslots`` slots from ``index`` and merge the free runs around them (spec §3.6)."""
    lst = pool.list
    view = pool.view
    end = index + nslots
    seg_lo = index & -IO_TLB_SEGSIZE
    count = lst[end] if end < seg_lo + IO_TLB_SEGSIZE and end < pool.nslabs else 0
    top = count + nslots
    view[index:end] = _DESC[top][:nslots]
    pool.heads[index] = 0
    pad = pool.head_pad[index]
    if pad:
        pool.pad_slots[index + pad] = 0
        pool.head_pad[index] = 0
    if index > seg_lo:
        run = lst.rfind(0, seg_lo, index) + 1 or seg_lo
        if run < index:
            top += index - run
            view[run:index] = _DESC[top][: index - run]
    area_index = index // pool.area_nslabs
    area = pool.areas[area_index]
    area.used -= nslots
    seg = (index - area_index * pool.area_nslabs) >> _SEG_SHIFT
    if area.segub[seg] < top:
        area.segub[seg] = top
        blk = seg >> _BLK_SHIFT
        if area.blkub[blk] < top:
            area.blkub[blk] = top
