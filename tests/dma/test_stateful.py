"""A hypothesis state machine over random map/sync/unmap sequences, checked byte for byte.

Each example boots a :class:`~swiotlb.Machine` with a drawn kernel profile (v6.12, v6.6, v5.15),
a small ``swiotlb=`` pool (128-1024 slots, so maps fail as full), forced or mask-driven bouncing,
and 1-3 devices with drawn ``min_align_mask``, DMA limits and segment boundaries. Rules allocate
CPU buffers with random bytes, map (``map_single``, ``map_page`` with IOMMU-style
``alloc_align_mask``/``alloc_size``, ``map_sg``), let the device read and write, sync full and
partial ranges in both directions, write from the CPU, unmap, and try a few DMA API misuses.

The test keeps a shadow of *all* memory that matters: every CPU buffer and the whole bounce
pool (free slots included, so stale bytes are modelled too); everything else must stay zero.
After every step the invariants compare the real machine with the shadow:

* the live mappings of each device are exactly the modelled ones, bounced where expected;
* held slot ranges (pad slots included) of live bounce buffers never overlap, stay inside one
  128-slot segment and one ``seg_boundary_mask`` window, and carry the kernel's per-slot
  ``orig_addr``/``alloc_size`` (spec §2.1, §3.1);
* the pool's ``list`` array is exactly the canonical free-run encoding of the free slots
  (spec §2.1), ``mem.check_invariants()`` is empty, and ``io_tlb_used``, ``total_used`` and
  every area's ``used`` equal the slots held by live mappings (hiwater only grows);
* memory equals the shadow: each CPU buffer, the pool, and zero everywhere else (every page
  that has storage is checked, so a stray write anywhere is caught);
* each live mapping's device view (``dma_read``) equals the shadow.

Expected copies are written from spec §4.1/§4.2, not read from the implementation: map copies
orig->bounce for every direction (>= 5.18: v6.12, v6.6) or only for TO_DEVICE/BIDIRECTIONAL
without SKIP_CPU_SYNC (v5.15); unmap copies back for FROM_DEVICE/BIDIRECTIONAL unless
SKIP_CPU_SYNC; sync_for_cpu copies back unless the *sync's* direction is TO_DEVICE;
sync_for_device copies in unless it is FROM_DEVICE.

Partial syncs (documented choice): they are drawn freely on every profile and the expected
bytes follow the profile. v6.12 (signed ``swiotlb_bounce``) always copies the requested range.
The pre-6.10 rule of v6.6 and v5.15 refuses the whole sync ("Access before mapping start")
when its first byte sits in a later slot below the mapping's offset inside its slot, i.e. when
``(dma + k) & 0x7ff < orig & min_align_mask & 0x7ff``; otherwise it copies exactly the range
(the overflow checks cannot trigger inside a mapping). This is derived from spec §4.1 here,
independently of :meth:`IoTlbMem.bounce_target`.

A failed map must change nothing but one thing the kernel really does: the map-time copy into
slots that are then released (bounce buffer beyond the device's reach; an sg entry after
which a later entry fails). Those bytes may only appear in free slots, and only as the bytes of
an attempted entry at a slot position congruent with its offset; "full"/"too_large" failures
change no byte, no free-run length and no area cursor.

Sync ranges: besides full and random sub-ranges, a dedicated rule syncs a bounced mapping
starting in a later slot just below its in-slot offset, after the other side has rewritten the
whole mapping, so the v6.6/v5.15 refusal (and the v6.12 fix) is visible in the bytes.

v5.15's do/while slot search can spin forever with min_align_mask (spec §3.4); the model raises
SearchDeadlock instead. A map or an sg map that hits it must have changed nothing (the sg map
gives back the entries it had already mapped).

v5.15 has no areas: its machines boot one pool with one lock whatever the CPU count.

Settings: derandomized, 100 examples of up to 50 steps (about 15-20 s here).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import pytest
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from swiotlb import DmaAttrs, DmaDirection, DmaMappingError, Machine, dma_bit_mask
from swiotlb.core.search import SearchDeadlock
from swiotlb.dma import CpuBuffer, Device, DmaApiMisuse

TO = DmaDirection.TO_DEVICE
FROM = DmaDirection.FROM_DEVICE
BIDI = DmaDirection.BIDIRECTIONAL
SKIP = int(DmaAttrs.SKIP_CPU_SYNC)
NO_WARN = int(DmaAttrs.NO_WARN)
SLOT = 2048
SEG = 128
INVALID = (1 << 64) - 1
U64 = dma_bit_mask(64)

# The rules of each profile as spec §3.1/§4.1/§4.2 state them (not read from the profiles).
#   pad: offsets >= 2 KiB become padding slots, size rounded to alloc_align_mask (>= 6.9/6.10)
#   copy_all: map copies orig -> bounce whatever dir/attrs (>= 5.18)
#   signed: partial syncs anywhere in the mapping work (>= 6.10)
#   alloc_size: swiotlb_tbl_map_single takes a separate alloc_size (<= 6.9)
RULES = {
    "v6.12": dict(pad=True, copy_all=True, signed=True, alloc_size=False, hiwater=True),
    "v6.6": dict(pad=False, copy_all=True, signed=False, alloc_size=True, hiwater=True),
    "v5.15": dict(pad=False, copy_all=False, signed=False, alloc_size=True, hiwater=False),
}

# Device reach. Boot pools sit just below the top of low memory (memblock is top-down: below
# 4 GiB on the 8 GiB machines, at the top of the 512 MiB ones); CPU buffers are first-fit from
# 1 MiB, or above 4 GiB when a filler takes the low memory. "dma32" bounces buffers above 4 GiB
# through a reachable pool; "half_pool" reaches only the lower half of the pool, so bounce
# buffers in the upper half are refused ("unaddressable", spec §4.3).
REACH = ["u64", "dma32", "half_pool"]


def rand_bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def min_not_zero(a: int, b: int) -> int:
    return b if a == 0 else a if b == 0 else min(a, b)


@dataclass
class Buf:
    obj: CpuBuffer
    data: bytearray


@dataclass
class Map:
    dev: int
    dma: int
    size: int
    dir: DmaDirection
    buf: int
    off: int  # offset of the mapped bytes inside the CPU buffer
    orig: int
    bounced: bool
    group: int | None  # sg group id, None for map_single/map_page
    low: int = 0  # sub-slot offset of the bounce buffer (orig & min_align & 0x7ff)
    pad: int = 0
    nslots: int = 0
    searched: int = 0  # size the slot search asked for (mapping + offsets, rounded)
    aam: int = 0  # alloc_align_mask

    @property
    def first_slot_addr(self) -> int:
        """Address of the first held slot (pad slots included)."""
        return self.dma - self.low - self.pad * SLOT


@dataclass
class Attempt:
    """One entry of a map call, for explaining stale bytes after a failure."""

    orig: int
    data: bytes
    low: int


dev_configs = st.tuples(
    st.sampled_from([0, 0x3F, 0xFFF, 0xFFF]),
    st.sampled_from(REACH),
    st.sampled_from([0xFFFFFFFF, 0xFFFFFFFF, 0xFFFF]),
    st.booleans(),
)


# Buffer sizes around the interesting lengths (hypothesis alone favours tiny integers).
buffer_sizes = st.builds(
    lambda base, jitter: max(1, base + jitter),
    st.sampled_from([2048, 4096, 12288, 40_000, 65536, 131072]),
    st.integers(-64, 64),
)
# Where a mapping starts inside its buffer (mostly in the first page, so sub-page offsets and
# min_align_mask bits vary) and how long it is (-1: to the end of the buffer).
offsets = st.integers(0, 8191) | st.integers(0, 2**20)
lengths = st.just(-1) | st.integers(0, 2**20)
# Which part of a mapping a device access or sync touches (see DmaStateMachine._pick_range).
ranges = st.sampled_from(["full", "any", "slot_head", "slot_head"])
# Seed of the bytes the other side writes over a mapping right before a sync (None: no write).
dirty_seeds = st.none() | st.integers(0, 2**32) | st.integers(0, 2**32)


class DmaStateMachine(RuleBasedStateMachine):
    """Shadow model of CPU buffers and the bounce pool; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.m: Machine
        self.devs: list[Device] = []
        self.limits: list[int] = []
        self.bufs: list[Buf] = []
        self.maps: list[Map] = []
        self.groups = 0
        self.hung = False
        self.hiwater_floor = 0
        self.last_hiwater = 0
        self._full_pages: set[int] = set()
        self._partial_pages: dict[int, list[tuple[int, int]]] = {}

    # -- boot --------------------------------------------------------------------------------
    @initialize(
        profile=st.sampled_from(["v6.12", "v6.6", "v5.15"]),
        slots=st.sampled_from(["128", "128", "256", "512", "1024", "1024,2"]),
        cpus=st.integers(1, 4),
        forced=st.sampled_from([True, True, False]),
        ram=st.sampled_from(["512M", "8G"]),
        devs=st.lists(dev_configs, min_size=1, max_size=3),
        low_window=st.sampled_from([None, 0, 96 << 10]),
        big=st.booleans(),
        seed=st.integers(0, 2**32),
    )
    def boot(self, profile: str, slots: str, cpus: int, forced: bool, ram: str, devs: list[tuple[int, str, int, bool]], low_window: int | None, big: bool, seed: int) -> None:
        if profile == "v5.15":  # no area count in 5.15's swiotlb= (one lock, spec §3.4)
            slots = slots.split(",")[0]
        self.kernel = RULES[profile]
        cmdline = f"swiotlb={slots}" + (",force" if forced else "")
        if not forced:
            ram = "8G"  # without force, x86 sets up a pool only when RAM reaches above 4 GiB (§1.5)
        self.m = Machine(ram, cpus=cpus, profile=profile, cmdline=cmdline)  # RAM is sparse
        self.cpus = cpus
        self.forced = forced
        pool = self.m.pool
        assert pool is not None and self.m.mem.force_bounce == forced
        self.pool = pool
        self.ps, self.pe = pool.start, pool.end
        self.pool_shadow = bytearray(self.pe - self.ps)  # the pool is zeroed at boot
        if low_window is not None and ram == "8G":
            # Take the low memory below the pool but a small window (never written: must stay
            # zero), so later buffers land above the pool, above 4 GiB on the 8 GiB machines.
            self.m.alloc(self.ps - (1 << 20) - low_window)
        for i, (mam, reach, bmask, coherent) in enumerate(devs):
            mask, bus = U64, 0
            if reach == "dma32":
                mask = dma_bit_mask(32)
            elif reach == "half_pool":
                bus = self.ps + (self.pe - self.ps) // 2 - 1
            self.devs.append(self.m.add_device(
                f"dev{i}", dma_mask=mask, bus_dma_limit=bus, min_align_mask=mam,
                seg_boundary_mask=bmask, coherent=coherent,
            ))
            self.limits.append(min_not_zero(mask, bus))
        if big:  # lets maps exceed 256 KiB ("too_large")
            self._new_buf(270_000, None, seed)
        self._coverage()

    # -- helpers -------------------------------------------------------------------------------
    def _new_buf(self, size: int, align: int | None, seed: int) -> None:
        obj = self.m.alloc(size, align=align)
        data = rand_bytes(seed, size)
        obj.write(data)
        self.bufs.append(Buf(obj, bytearray(data)))

    def _coverage(self) -> None:
        """Pages fully covered by the pool or CPU buffers, and the uncovered parts of the others."""
        ps = self.m.memory.page_size
        spans = sorted([(self.ps, self.pe)] + [(b.obj.phys_addr, b.obj.phys_addr + b.obj.size) for b in self.bufs])
        touched: dict[int, list[tuple[int, int]]] = {}
        for lo, hi in spans:
            for p in range(lo // ps, (hi - 1) // ps + 1):
                touched.setdefault(p, []).append((max(lo, p * ps), min(hi, (p + 1) * ps)))
        self._full_pages = set()
        self._partial_pages = {}
        for p, covered in touched.items():
            pos, holes = p * ps, []
            for lo, hi in sorted(covered):
                if lo > pos:
                    holes.append((pos, lo))
                pos = max(pos, hi)
            if pos < (p + 1) * ps:
                holes.append((pos, (p + 1) * ps))
            if holes:
                self._partial_pages[p] = holes
            else:
                self._full_pages.add(p)

    def _layout(self, dev: Device, orig: int, size: int, aam: int, alloc_size: int | None) -> tuple[int, int, int, int]:
        """(low, pad, searched, nslots) of a bounce allocation (spec §3.1)."""
        mam = dev.min_align_mask
        if self.kernel["pad"]:
            offset = orig & mam & (aam | (SLOT - 1))
            searched = (size + offset + aam) & ~aam
            low, pad = offset & (SLOT - 1), offset >> 11
        else:
            low, pad = orig & mam & (SLOT - 1), 0
            searched = (alloc_size or size) + low
        return low, pad, searched, -(-searched // SLOT)

    def _too_large(self, dev: Device, nslots: int) -> bool:
        return nslots > SEG or nslots > (dev.seg_boundary_mask >> 11) + 1

    def _bounce_view(self, mp: Map, k: int, n: int) -> bytearray:
        lo = mp.dma - self.ps + k
        return self.pool_shadow[lo : lo + n]

    def _to_bounce(self, mp: Map, k: int, n: int) -> None:
        lo = mp.dma - self.ps + k
        b = self.bufs[mp.buf]
        self.pool_shadow[lo : lo + n] = b.data[mp.off + k : mp.off + k + n]

    def _to_cpu(self, mp: Map, k: int, n: int) -> None:
        lo = mp.dma - self.ps + k
        b = self.bufs[mp.buf]
        b.data[mp.off + k : mp.off + k + n] = self.pool_shadow[lo : lo + n]

    def _partial_ok(self, mp: Map, k: int) -> bool:
        """Does the profile's swiotlb_bounce copy a sync starting k bytes into the mapping?"""
        return self.kernel["signed"] or ((mp.dma + k) & (SLOT - 1)) >= mp.low

    def _pick_range(self, mp: Map, where: str, a: int, b: int) -> tuple[int, int]:
        """A sub-range (k, n) of a mapping: all of it, anywhere, or starting in a later slot
        just below the mapping's in-slot offset (what the pre-6.10 bounce refuses)."""
        size = mp.size
        if where == "full":
            return 0, size
        k = a % size
        if where == "slot_head" and mp.bounced and mp.low:
            later = (mp.low + size - 1) // SLOT  # slots of the mapping after its first
            if later:
                k = min(size - 1, (1 + a % later) * SLOT - mp.low + b % mp.low)
        return k, 1 + b % (size - k)

    def _overlaps_other(self, mp: Map, lo: int, hi: int) -> bool:
        """Another live mapping of the same device overlapping [lo, hi) (only direct ones can)."""
        return any(
            o is not mp and o.dev == mp.dev and o.dma < hi and lo < o.dma + o.size for o in self.maps
        )

    def _state(self) -> tuple[bytes, list[int]]:
        return bytes(self.pool.list), [a.index for a in self.pool.areas]

    def _entry(self, b: int, off: int, length: int, cap: int) -> tuple[int, int, int]:
        """A (buffer, offset, length) inside a drawn buffer; length at most ``cap``."""
        bi = b % len(self.bufs)
        size = self.bufs[bi].obj.size
        o = off % size
        n = min(size - o, cap)
        return bi, o, n if length < 0 else 1 + length % n

    def _after_failure(self, err: DmaMappingError, attempts: list[Attempt], before: tuple[bytes, list[int]],
                       used_before: int, nslots: list[int], dev: Device, limit: int) -> None:
        """A failed map changed nothing but stale bytes in free slots (see the module docstring)."""
        assert err.cause in ("full", "too_large", "unaddressable"), err
        lst, cursors = self._state()
        assert lst == before[0], "a failed map changed the free-run lists"
        assert self.m.mem.total_used == used_before
        too_large = [self._too_large(dev, n) for n in nslots]
        if err.cause == "too_large":
            assert any(too_large), (err, nslots)
        elif len(nslots) == 1:
            assert not too_large[0], (err, nslots)
        if err.cause == "unaddressable":
            assert limit < self.pe - 1, "unaddressable although the whole pool is reachable"
        now = self.m.memory.read(self.ps, self.pe - self.ps)
        if len(attempts) == 1 and err.cause in ("full", "too_large"):
            assert cursors == before[1], "a failed search moved an area cursor"
            assert now == self.pool_shadow, "a failed search wrote into the pool"
            return
        if now == self.pool_shadow:
            return
        # Bytes copied into slots that were taken and released again.
        held = self._held_slots()
        shadow = self.pool_shadow
        diff = [s for s in range(self.pool.nslabs) if now[s * SLOT : (s + 1) * SLOT] != shadow[s * SLOT : (s + 1) * SLOT]]
        assert not any(held[s] for s in diff), f"a failed map changed live bounce slots {diff}"
        windows: list[tuple[int, int]] = []
        for at in attempts:
            n = len(at.data)
            for s in range(max(0, diff[0] - SEG), diff[-1] + 1):
                t = s * SLOT + at.low
                if t + n <= len(now) and now[t : t + n] == at.data:
                    windows.append((t, t + n))
        for s in diff:
            pos, end = s * SLOT, (s + 1) * SLOT
            for lo, hi in sorted(windows):
                if hi <= pos or lo >= end:
                    continue
                if lo > pos:
                    assert now[pos:lo] == shadow[pos:lo], f"unexplained change in free slot {s}"
                pos = max(pos, hi)
            if pos < end:
                assert now[pos:end] == shadow[pos:end], f"unexplained change in free slot {s}"
        self.pool_shadow[:] = now

    def _after_deadlock(self, before: tuple[bytes, list[int]], used: int) -> None:
        """The <= 6.2 do/while search would spin forever (spec §3.4); the model refuses instead.

        Only the wrap-loop generation (v5.15 here) can get there, and nothing may have changed.
        """
        assert not self.kernel["signed"] and not self.kernel["copy_all"], "only the 5.x search can spin"
        assert self._state() == before and self.m.mem.total_used == used
        assert self.m.memory.read(self.ps, self.pe - self.ps) == self.pool_shadow

    def _held_slots(self) -> bytearray:
        held = bytearray(self.pool.nslabs)
        for mp in self.maps:
            if mp.bounced:
                first = (mp.first_slot_addr - self.ps) // SLOT
                for s in range(first, first + mp.nslots):
                    assert not held[s], f"slot {s} held by two live mappings"
                    held[s] = 1
        return held

    def _record(self, dev_i: int, dma: int, bi: int, off: int, size: int, dir: DmaDirection, attrs: int,
                group: int | None, aam: int, alloc_size: int | None) -> Map:
        dev = self.devs[dev_i]
        b = self.bufs[bi]
        orig = b.obj.phys_addr + off
        limit = self.limits[dev_i]
        bounced = self.forced or orig + size - 1 > limit
        mp = Map(dev_i, dma, size, dir, bi, off, orig, bounced, group)
        if not bounced:
            assert dma == orig, "a direct mapping must hand the device the CPU buffer itself"
            return mp
        mp.low, mp.pad, mp.searched, mp.nslots = self._layout(dev, orig, size, aam, alloc_size)
        mp.aam = aam
        assert self.ps <= mp.first_slot_addr and dma + size <= self.pe, "bounce buffer outside the pool"
        assert dma + size - 1 <= limit, "bounce buffer beyond the device's reach"
        assert (dma - self.ps) % SLOT == mp.low, "bounce buffer does not start at the min-align offset"
        mam = dev.min_align_mask
        assert dma & mam == orig & mam, "min_align_mask bits not preserved (spec §3.1)"
        first = mp.first_slot_addr
        if self.kernel["pad"]:
            assert first & (aam | (SLOT - 1)) == 0
            if aam == 0 and mam == 0 and mp.searched >= 4096:
                assert first & 0xFFF == 0, "v6.9+ page-aligns bounce buffers of a page or more"
        elif self.m.profile.name == "v6.6":
            merged = (mam | aam | (0xFFF if mp.searched >= 4096 else 0)) & ~(SLOT - 1)
            assert (first ^ orig) & merged == 0, "6.3-6.8 congruence modulo the merged mask"
        if self.kernel["copy_all"] or (not attrs & SKIP and dir is not FROM):
            self._to_bounce(mp, 0, size)
        return mp

    def _bump_hiwater(self) -> None:
        self.hiwater_floor = max(self.hiwater_floor, self.m.mem.total_used)

    # -- rules ---------------------------------------------------------------------------------
    @precondition(lambda self: len(self.bufs) < 10)
    @rule(size=buffer_sizes, align=st.sampled_from([None, None, 64]),
          seed=st.integers(0, 2**32))
    def alloc_buffer(self, size: int, align: int | None, seed: int) -> None:
        self._new_buf(size, align, seed)
        self._coverage()

    @precondition(lambda self: self.bufs)
    @rule(buf=st.integers(0, 99), off=st.integers(0, 2**20), n=st.integers(0, 2**20), seed=st.integers(0, 2**32))
    def cpu_write(self, buf: int, off: int, n: int, seed: int) -> None:
        b = self.bufs[buf % len(self.bufs)]
        o = off % b.obj.size
        data = rand_bytes(seed, 1 + n % min(b.obj.size - o, 8192))
        b.obj.write(data, o)
        b.data[o : o + len(data)] = data

    @precondition(lambda self: self.bufs)
    @rule(
        dev=st.integers(0, 2), buf=st.integers(0, 99), off=offsets, length=lengths,
        dir=st.sampled_from([TO, FROM, BIDI]), skip=st.booleans(), no_warn=st.booleans(), cpu=st.integers(0, 3),
        how=st.sampled_from(["single", "page", "page_iommu", "page_iommu"]), extra=st.integers(0, 4096),
    )
    def map_one(self, dev: int, buf: int, off: int, length: int, dir: DmaDirection, skip: bool, no_warn: bool,
                cpu: int, how: str, extra: int) -> None:
        di = dev % len(self.devs)
        d = self.devs[di]
        bi, o, size = self._entry(buf, off, length, 1 << 30)
        b = self.bufs[bi]
        attrs = (SKIP if skip else 0) | (NO_WARN if no_warn else 0)
        cpu %= self.cpus
        aam, alloc_size = 0, None
        if how == "page_iommu":  # the dma-iommu bounce arguments (spec §3.1, §4.4)
            aam = 0xFFF
            if self.kernel["alloc_size"] and extra % 2:
                alloc_size = size + extra
        before, used = self._state(), self.m.mem.total_used
        orig = b.obj.phys_addr + o
        try:
            if how == "single":
                dma = d.map_single(orig, size, dir, attrs=attrs, cpu=cpu)
            else:
                dma = d.map_page(b.obj, o, size, dir, attrs=attrs, cpu=cpu, alloc_align_mask=aam, alloc_size=alloc_size)
        except SearchDeadlock:
            self._after_deadlock(before, used)
            return
        except DmaMappingError as e:
            assert self.forced or orig + size - 1 > self.limits[di], "a direct map failed"
            low, _, _, n = self._layout(d, orig, size, aam, alloc_size)
            self._after_failure(e, [Attempt(orig, bytes(b.data[o : o + size]), low)], before, used, [n], d,
                                self.limits[di])
            return
        self.maps.append(self._record(di, dma, bi, o, size, dir, attrs, None, aam, alloc_size))
        self._bump_hiwater()

    @precondition(lambda self: self.bufs)
    @rule(
        dev=st.integers(0, 2),
        entries=st.lists(st.tuples(st.integers(0, 99), offsets, lengths), min_size=1, max_size=4),
        dir=st.sampled_from([TO, FROM, BIDI]), skip=st.booleans(), cpu=st.integers(0, 3),
    )
    def map_sg(self, dev: int, entries: list[tuple[int, int, int]], dir: DmaDirection, skip: bool, cpu: int) -> None:
        di = dev % len(self.devs)
        d = self.devs[di]
        ents = [self._entry(b, o, n, 32 << 10) for b, o, n in entries]
        attrs = SKIP if skip else 0
        before, used = self._state(), self.m.mem.total_used
        try:
            segs = d.map_sg([(self.bufs[bi].obj.phys_addr + o, n) for bi, o, n in ents], dir, attrs=attrs,
                            cpu=cpu % self.cpus)
        except SearchDeadlock:
            # The kernel would hang here; the model refuses and gives back the earlier entries.
            self._after_deadlock(before, used)
            return
        except DmaMappingError as e:
            attempts, sizes = [], []
            for bi, o, n in ents:
                orig = self.bufs[bi].obj.phys_addr + o
                low, _, _, ns = self._layout(d, orig, n, 0, None)
                attempts.append(Attempt(orig, bytes(self.bufs[bi].data[o : o + n]), low))
                sizes.append(ns)
            self._after_failure(e, attempts, before, used, sizes, d, self.limits[di])
            return
        assert [(s.length, s.phys_addr) for s in segs] == [(n, self.bufs[bi].obj.phys_addr + o) for bi, o, n in ents]
        self.groups += 1
        for (bi, o, n), s in zip(ents, segs):
            self.maps.append(self._record(di, s.dma_addr, bi, o, n, dir, attrs, self.groups, 0, None))
        self._bump_hiwater()

    @precondition(lambda self: self.maps)
    @rule(pick=st.integers(0, 99), where=ranges, a=st.integers(0, 2**20), b=st.integers(0, 2**20),
          seed=st.integers(0, 2**32))
    def device_write(self, pick: int, where: str, a: int, b: int, seed: int) -> None:
        """The device writes into a mapping. Drawn for every direction: into a TO_DEVICE mapping
        it is a device bug, and those bytes must then never reach the CPU buffer."""
        mp = self.maps[pick % len(self.maps)]
        k, n = self._pick_range(mp, where, a, b)
        self._device_write(mp, k, rand_bytes(seed, n))

    def _device_write(self, mp: Map, k: int, data: bytes) -> None:
        n = len(data)
        self.devs[mp.dev].dma_write(mp.dma + k, data)
        if mp.bounced:
            lo = mp.dma - self.ps + k
            self.pool_shadow[lo : lo + n] = data
        else:
            self.bufs[mp.buf].data[mp.off + k : mp.off + k + n] = data

    @precondition(lambda self: self.maps)
    @rule(pick=st.integers(0, 99), where=ranges, a=st.integers(0, 2**20), b=st.integers(0, 2**20))
    def device_read(self, pick: int, where: str, a: int, b: int) -> None:
        mp = self.maps[pick % len(self.maps)]
        k, n = self._pick_range(mp, where, a, b)
        want = self._bounce_view(mp, k, n) if mp.bounced else self.bufs[mp.buf].data[mp.off + k : mp.off + k + n]
        assert self.devs[mp.dev].dma_read(mp.dma + k, n) == want

    def _sync(self, pick: int, where: str, a: int, b: int, for_cpu: bool, sync_dir: DmaDirection, cpu: int,
              dirty: int | None) -> None:
        """A full or partial sync; with ``dirty`` the other side first rewrites the whole mapping
        (device for sync_for_cpu, CPU for sync_for_device), so every byte the sync should or
        should not move is visible afterwards."""
        mp = self.maps[pick % len(self.maps)]
        k, n = self._pick_range(mp, where, a, b)
        if self._overlaps_other(mp, mp.dma, mp.dma + mp.size):
            return  # two direct mappings hold these bytes: dma-debug's lookup could pick either
        d = sync_dir if mp.dir is BIDI else mp.dir  # any direction on BIDIRECTIONAL mappings
        dev = self.devs[mp.dev]
        if dirty is not None:
            data = rand_bytes(dirty, mp.size)
            if for_cpu:
                self._device_write(mp, 0, data)
            else:
                self.bufs[mp.buf].obj.write(data, mp.off)
                self.bufs[mp.buf].data[mp.off : mp.off + mp.size] = data
        if for_cpu:
            dev.sync_for_cpu(mp.dma + k, n, d, cpu=cpu % self.cpus)
            if mp.bounced and d is not TO and self._partial_ok(mp, k):
                self._to_cpu(mp, k, n)
        else:
            dev.sync_for_device(mp.dma + k, n, d, cpu=cpu % self.cpus)
            if mp.bounced and d is not FROM and self._partial_ok(mp, k):
                self._to_bounce(mp, k, n)

    @precondition(lambda self: self.maps)
    @rule(pick=st.integers(0, 99), where=ranges, a=st.integers(0, 2**20), b=st.integers(0, 2**20),
          sync_dir=st.sampled_from([TO, FROM, BIDI]), cpu=st.integers(0, 3), dirty=dirty_seeds)
    def sync_for_cpu(self, pick: int, where: str, a: int, b: int, sync_dir: DmaDirection, cpu: int,
                     dirty: int | None) -> None:
        self._sync(pick, where, a, b, True, sync_dir, cpu, dirty)

    @precondition(lambda self: self.maps)
    @rule(pick=st.integers(0, 99), where=ranges, a=st.integers(0, 2**20), b=st.integers(0, 2**20),
          sync_dir=st.sampled_from([TO, FROM, BIDI]), cpu=st.integers(0, 3), dirty=dirty_seeds)
    def sync_for_device(self, pick: int, where: str, a: int, b: int, sync_dir: DmaDirection, cpu: int,
                        dirty: int | None) -> None:
        self._sync(pick, where, a, b, False, sync_dir, cpu, dirty)

    def _straddling(self) -> list[int]:
        """Bounced mappings with an in-slot offset that reach into a later slot."""
        return [i for i, mp in enumerate(self.maps) if mp.bounced and mp.low and mp.low + mp.size > SLOT]

    @precondition(lambda self: self._straddling())
    @rule(pick=st.integers(0, 99), a=st.integers(0, 2**20), b=st.integers(0, 2**20), for_cpu=st.booleans(),
          sync_dir=st.sampled_from([TO, FROM, BIDI]), dirty=st.integers(0, 2**32))
    def sync_at_slot_head(self, pick: int, a: int, b: int, for_cpu: bool, sync_dir: DmaDirection, dirty: int) -> None:
        """The partial sync the pre-6.10 bounce refuses, made visible by a fresh write first."""
        cands = self._straddling()
        self._sync(cands[pick % len(cands)], "slot_head", a, b, for_cpu, sync_dir, 0, dirty)

    @precondition(lambda self: any(mp.group is None for mp in self.maps))
    @rule(pick=st.integers(0, 99), skip=st.booleans(), cpu=st.integers(0, 3))
    def unmap(self, pick: int, skip: bool, cpu: int) -> None:
        singles = [mp for mp in self.maps if mp.group is None]
        mp = singles[pick % len(singles)]
        self.devs[mp.dev].unmap(mp.dma, mp.size, mp.dir, attrs=SKIP if skip else 0, cpu=cpu % self.cpus)
        if mp.bounced and not skip and mp.dir is not TO:
            self._to_cpu(mp, 0, mp.size)
        self.maps.remove(mp)

    @precondition(lambda self: any(mp.group is not None for mp in self.maps))
    @rule(pick=st.integers(0, 99), skip=st.booleans(), cpu=st.integers(0, 3))
    def unmap_sg(self, pick: int, skip: bool, cpu: int) -> None:
        groups = sorted({mp.group for mp in self.maps if mp.group is not None})
        g = groups[pick % len(groups)]
        ents = [mp for mp in self.maps if mp.group == g]
        first = ents[0]
        self.devs[first.dev].unmap_sg([(mp.dma, mp.size) for mp in ents], first.dir,
                                      attrs=SKIP if skip else 0, cpu=cpu % self.cpus)
        for mp in ents:  # copied back entry by entry, in list order
            if mp.bounced and not skip and mp.dir is not TO:
                self._to_cpu(mp, 0, mp.size)
            self.maps.remove(mp)

    @precondition(lambda self: self.maps)
    @rule(pick=st.integers(0, 99), kind=st.sampled_from(["size", "dir", "kind", "past_end", "sync_dir", "inside"]))
    def misuse(self, pick: int, kind: str) -> None:
        """DMA API misuse is refused before anything changes (the invariants check the rest)."""
        mp = self.maps[pick % len(self.maps)]
        dev = self.devs[mp.dev]
        other = {TO: FROM, FROM: TO, BIDI: TO}[mp.dir]
        if self._overlaps_other(mp, mp.dma, mp.dma + mp.size + 1):
            return  # ambiguous for dma-debug's lookup (direct mappings only)
        a, n, d = mp.dma, mp.size, mp.dir
        unmap_same = dev.unmap if mp.group is None else (lambda a, n, d: dev.unmap_sg([(a, n)], d))
        call: Callable[[], None]
        if kind == "size":
            call = lambda: unmap_same(a, n + 1, d)  # noqa: E731
        elif kind == "dir":
            call = lambda: unmap_same(a, n, other)  # noqa: E731
        elif kind == "kind":  # single unmapped as sg, or an sg entry unmapped as single
            call = (lambda: dev.unmap_sg([(a, n)], d)) if mp.group is None else (lambda: dev.unmap(a, n, d))
        elif kind == "past_end":
            call = lambda: dev.sync_for_cpu(a + n - 1, 2, d)  # noqa: E731
        elif kind == "sync_dir":
            if d is BIDI:
                return  # BIDIRECTIONAL mappings allow every sync direction
            call = lambda: dev.sync_for_device(a, n, other)  # noqa: E731
        else:  # unmap of an address inside the mapping
            if n < 2 or any(o.dev == mp.dev and o.dma == a + 1 for o in self.maps):
                return
            call = lambda: dev.unmap(a + 1, n - 1, d)  # noqa: E731
        with pytest.raises(DmaApiMisuse):
            call()

    # -- invariants ------------------------------------------------------------------------------
    @invariant()
    def mappings_match_the_model(self) -> None:
        for i, dev in enumerate(self.devs):
            got = sorted((lm.dma_addr, lm.size, lm.dir, lm.bounced) for lm in dev.live_mappings())
            want = sorted((mp.dma, mp.size, mp.dir, mp.bounced) for mp in self.maps if mp.dev == i)
            assert got == want, f"{dev.name}: live mappings differ from the model"

    @invariant()
    def slots_lists_and_counters(self) -> None:
        mem, pool = self.m.mem, self.pool
        assert mem.check_invariants() == []
        held = self._held_slots()  # also asserts that no two live mappings share a slot
        for mp in self.maps:
            if not mp.bounced:
                continue
            first = (mp.first_slot_addr - self.ps) // SLOT
            assert first // SEG == (first + mp.nslots - 1) // SEG, "allocation crosses a 128-slot segment"
            bmask = self.devs[mp.dev].seg_boundary_mask
            end_addr = mp.first_slot_addr + mp.nslots * SLOT - 1
            assert mp.first_slot_addr & ~bmask == end_addr & ~bmask, "allocation crosses seg_boundary_mask"
            for j in range(mp.nslots):  # per-slot fields (spec §2.1)
                s = first + j
                want_orig = INVALID if j < mp.pad else mp.orig + (j - mp.pad) * SLOT
                assert pool.slot_orig_addr(s) == want_orig, f"slot {s} orig_addr"
                assert pool.slot_alloc_size(s) == mp.searched - mp.low - j * SLOT, f"slot {s} alloc_size"
        # the free-run encoding is exactly the canonical one for the free slots (spec §2.1)
        want = bytearray(pool.nslabs)
        run = 0
        for s in range(pool.nslabs - 1, -1, -1):
            if s % SEG == SEG - 1:
                run = 0
            run = 0 if held[s] else run + 1
            want[s] = run
        assert bytes(pool.list) == bytes(want), "free-run list differs from the live mappings"
        total = sum(held)
        assert mem.total_used == total
        stats = self.m.stats
        assert stats["io_tlb_used"] == total and stats["io_tlb_nslabs"] == pool.nslabs
        for a, area in enumerate(pool.areas):
            lo = a * pool.area_nslabs
            assert area.used == sum(held[lo : lo + pool.area_nslabs]), f"area {a} used"
        if self.kernel["hiwater"]:
            hw = stats["io_tlb_used_hiwater"]
            assert self.hiwater_floor <= hw <= pool.nslabs and hw >= self.last_hiwater
            self.last_hiwater = hw
        else:
            assert "io_tlb_used_hiwater" not in stats

    @invariant()
    def memory_matches_the_shadow(self) -> None:
        mem = self.m.memory
        assert mem.read(self.ps, self.pe - self.ps) == self.pool_shadow, "bounce pool bytes differ from the model"
        for i, b in enumerate(self.bufs):
            assert b.obj.read() == b.data, f"CPU buffer {i} differs from the model"
        for p in mem.touched_pages():  # nothing else was ever written: must read as zero
            if p in self._full_pages:
                continue
            holes = self._partial_pages.get(p, [(p * mem.page_size, (p + 1) * mem.page_size)])
            for lo, hi in holes:
                assert mem.read(lo, hi - lo).count(0) == hi - lo, f"stray write at {lo:#x}-{hi:#x}"

    @invariant()
    def device_sees_the_model(self) -> None:
        for mp in self.maps:
            want = self._bounce_view(mp, 0, mp.size) if mp.bounced else self.bufs[mp.buf].data[mp.off : mp.off + mp.size]
            assert self.devs[mp.dev].dma_read(mp.dma, mp.size) == want

    def teardown(self) -> None:
        """Unmapping everything returns the pool to empty."""
        if not hasattr(self, "m") or self.hung:
            return
        for mp in [mp for mp in self.maps if mp.group is None]:
            self.devs[mp.dev].unmap(mp.dma, mp.size, mp.dir)
        for g in sorted({mp.group for mp in self.maps if mp.group is not None}):
            ents = [mp for mp in self.maps if mp.group == g]
            self.devs[ents[0].dev].unmap_sg([(mp.dma, mp.size) for mp in ents], ents[0].dir)
        assert self.m.mem.total_used == 0 and self.m.mem.check_invariants() == []
        assert self.pool.list.count(0) == 0


DmaStateMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestDmaStateMachine = DmaStateMachine.TestCase
