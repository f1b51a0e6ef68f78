"""How big the kernel makes its bounce pools, and what ``swiotlb=`` really means.

Pure arithmetic (no I/O, clock or randomness) that replays the kernel's boot order, because the
order is what decides the outcome (spec §1.3-§1.5, §6):

1. early parameters: every ``swiotlb=`` in command-line order; an area count rounds the
   default size immediately (``swiotlb_adjust_nareas``);
2. the architecture's ``swiotlb_adjust_size`` (x86 CoCo 6 % rule, arm64 kmalloc bounce sizing),
   which only acts while ``default_nslabs`` still has its default value;
3. ``swiotlb_init_remap``: areas from the CPU count if none were given, ``limit_nareas``, and
   the halving loop when the boot allocator cannot supply the block.

Names follow the kernel functions they model so tests can check each rule on its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from swiotlb.core.constants import (
    IO_TLB_DEFAULT_SIZE,
    IO_TLB_MIN_SLABS,
    IO_TLB_SEGSIZE,
    IO_TLB_SHIFT,
    IO_TLB_SIZE,
    MAX_SEGMENT_BYTES,
    U32_MASK,
    U64_MASK,
    align_up,
    is_power_of_two,
    nr_slots,
    roundup_pow_of_two,
)

__all__ = [
    "fit_nareas",
    "parse_size",
    "ARCHES",
    "DEFAULT_NSLABS",
    "LOG_PREFIX",
    "LatePoolPlan",
    "PoolPlan",
    "SwiotlbParam",
    "adjust_nareas",
    "adjust_size",
    "alloc_pool_plan",
    "halving_sizes",
    "arm64_kmalloc_bounce_bytes",
    "coco_pool_bytes",
    "get_order",
    "late_pool_plan",
    "limit_nareas",
    "max_mapping_size",
    "parse_cmdline",
    "parse_swiotlb_param",
    "plan_boot_pool",
    "round_up_default_nslabs",
    "x86_needs_swiotlb",
]

LOG_PREFIX = "software IO TLB: "  # every swiotlb message carries it (spec §1.5)
DEFAULT_NSLABS = IO_TLB_DEFAULT_SIZE >> IO_TLB_SHIFT  # 32768, the value the adjust guard tests
ARCHES = ("x86_64", "arm64", "generic")  # "generic": no arch size adjustment at all
COCO_MAX_BYTES = 1 << 30  # upper clamp of the x86 6 % rule (spec §1.3)
FOUR_GIB = 1 << 32
# Beyond this the kernel's 32-bit product 128 * nareas wraps; not modelled (see round_up_default_nslabs).
_MAX_AREAS = U32_MASK // IO_TLB_SEGSIZE

_BARE = "bare 'swiotlb' without '=' is not modelled; ignored"
ParamStep = tuple[str, int]  # ("nslabs", aligned count) or ("nareas", count as given)


# --------------------------------------------------------------------------------------------
# The swiotlb= parameter (spec §6)


@dataclass(frozen=True, slots=True)
class SwiotlbParam:
    """What ``swiotlb=`` does to the kernel's state (spec §6, ``setup_io_tlb_npages`` >= 6.0).

    ``steps`` records the assignments in the order the kernel made them; when several
    ``swiotlb=`` occurrences were merged the order matters (an area count only rounds the slab
    count that is already set). A hand-built value with empty ``steps`` is replayed as
    "slab count, then area count".
    """

    text: str
    nslabs: int | None
    nareas: int | None
    force: bool
    noforce: bool
    warnings: tuple[str, ...]
    steps: tuple[ParamStep, ...] = ()
    occurrences: tuple[str, ...] = ()

    def replay_steps(self) -> tuple[ParamStep, ...]:
        """The assignments to apply, in kernel order."""
        if self.steps:
            return self.steps
        out: list[ParamStep] = []
        if self.nslabs is not None:
            out.append(("nslabs", self.nslabs))
        if self.nareas is not None:
            out.append(("nareas", self.nareas))
        return tuple(out)


_DIGITS = "0123456789"
_HEXDIGITS = "0123456789abcdefABCDEF"
_SUFFIX = re.compile(r"([kKmMgGtT])(i?[bB])?(,.*)?")  # what a size-minded user types: 64M, 1G, 512KiB
_UNIT_SHIFT = {"k": 10, "m": 20, "g": 30, "t": 40}


def _strtoul(text: str, pos: int) -> tuple[int, int, int, bool]:
    """``simple_strtoul(s, &end, 0)`` on 64-bit: (value mod 2**64, end, base, wrapped).

    Base 0 means a ``0x`` prefix (needs a hex digit after it) selects hex, a lone leading ``0``
    octal; parsing stops silently at the first digit the base does not allow.
    """
    base = 10
    if text[pos] == "0":
        after = text[pos + 2 : pos + 3]
        if text[pos + 1 : pos + 2] in ("x", "X") and after != "" and after in _HEXDIGITS:
            base, pos = 16, pos + 2
        else:
            base = 8
    value = 0
    while pos < len(text) and text[pos] in _HEXDIGITS:
        digit = int(text[pos], 16)
        if digit >= base:
            break
        value = value * base + digit
        pos += 1
    return value & U64_MASK, pos, base, value > U64_MASK


def _human(nbytes: int) -> str:
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if nbytes >= 1 << shift and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift} {unit}"
    if nbytes >= 1 << 20:
        return f"{nbytes / (1 << 20):.1f} MiB"
    return f"{nbytes} B"


def _number_notes(what: str, literal: str, value: int, base: int, wrapped: bool, stop: str) -> list[str]:
    notes: list[str] = []
    if base == 8 and len(literal) > 1:
        notes.append(f"{what} '{literal}' has a leading 0, so the kernel reads it as octal: {value}")
    if base == 8 and stop in ("8", "9"):
        notes.append(
            f"{what} '{literal}{stop}...': the leading 0 makes it octal and parsing stops at '{stop}', "
            f"so the kernel takes {value} and treats what follows as the next field"
        )
    if wrapped:
        notes.append(f"{what} does not fit in 64 bits; the kernel keeps it modulo 2**64: {value}")
    return notes


def _explain_rest(rest: str, first: tuple[int, str] | None, nareas: int | None) -> list[str]:
    """Why the unparsed remainder was ignored, with the user's probable intent."""
    notes = [
        f"'{rest}' ignored: after the numbers the kernel accepts only exactly 'force' or 'noforce', "
        "and says nothing about anything else"
    ]
    suffix = _SUFFIX.fullmatch(rest)
    if suffix and first is not None and nareas is None:
        value, literal = first
        meant_bytes = value << _UNIT_SHIFT[suffix.group(1).lower()]
        meant = align_up(nr_slots(meant_bytes), IO_TLB_SEGSIZE)
        read = align_up(value, IO_TLB_SEGSIZE)
        notes.append(
            f"no size suffix exists: '{literal}' is read as {value} slabs (-> {read} slabs = "
            f"{_human(read * IO_TLB_SIZE)}) and '{suffix.group(1)}' is dropped; "
            f"{_human(meant_bytes)} would be swiotlb={meant}"
        )
    parts = rest.split(",")
    keywords = [p for p in parts if p in ("force", "noforce")]
    if len(keywords) >= 2:
        notes.append("only one keyword is accepted and it must stand alone: neither force nor noforce is set")
    elif keywords:
        kw = keywords[0]
        after = rest[len(kw) + 1 :] if rest.startswith(kw + ",") else ""
        if after and after[0] in _DIGITS:
            notes.append(
                f"'{rest}' is not exactly '{kw}': {kw} is NOT set, and '{after}' is not read as a count "
                f"(numbers must come first: swiotlb={after},{kw}); nothing in it takes effect"
            )
        else:
            notes.append(f"'{rest}' is not exactly '{kw}': {kw} is NOT set")
    elif any(p.lower() in ("force", "noforce") for p in parts):
        notes.append("keywords are case-sensitive ('force', 'noforce'): nothing is set")
    if rest[0] in _DIGITS and nareas is not None:
        notes.append("only two numbers are read (slabs, then areas); a third is ignored")
    return notes


def parse_swiotlb_param(text: str) -> SwiotlbParam:
    """Parse one ``swiotlb=`` value exactly as ``setup_io_tlb_npages`` does (spec §6).

    Grammar as the code accepts it: ``[count][,][areas][,][force|noforce]`` where each optional
    piece is only taken when its first character fits; the keyword must be the whole remainder.
    The kernel reports nothing, so ``warnings`` says what was dropped or reinterpreted.
    """
    pos, end = 0, len(text)
    steps: list[ParamStep] = []
    warnings: list[str] = []
    nslabs: int | None = None
    nareas: int | None = None
    first: tuple[int, str] | None = None
    if pos < end and text[pos] in _DIGITS:
        start = pos
        value, pos, base, wrapped = _strtoul(text, pos)
        literal = text[start:pos]
        first = (value, literal)
        nslabs = align_up(value, IO_TLB_SEGSIZE) & U64_MASK  # ALIGN in unsigned long
        steps.append(("nslabs", nslabs))
        warnings += _number_notes("slab count", literal, value, base, wrapped, text[pos : pos + 1])
        if value == 0:
            warnings.append("0 slabs: at boot the pool becomes 128 slots per area (area rounding)")
        elif nslabs < value:
            warnings.append(
                f"{value} slabs: rounding up to a multiple of 128 wraps the kernel's 64-bit count to {nslabs}"
            )
        elif nslabs != value:
            warnings.append(f"{value} slabs rounded up to {nslabs} (a multiple of {IO_TLB_SEGSIZE})")
    if pos < end and text[pos] == ",":
        pos += 1
    if pos < end and text[pos] in _DIGITS:
        start = pos
        value, pos, base, wrapped = _strtoul(text, pos)
        literal = text[start:pos]
        warnings += _number_notes("area count", literal, value, base, wrapped, text[pos : pos + 1])
        nareas = value & U32_MASK  # swiotlb_adjust_nareas takes an unsigned int
        if nareas != value:
            warnings.append(f"area count {value} truncated to 32 bits by the kernel: {nareas}")
        steps.append(("nareas", nareas))
        rounded = adjust_nareas(nareas)
        if nareas == 0:
            warnings.append("0 areas means 1 area")
        elif rounded == 0:
            warnings.append(
                f"{nareas} areas: rounding up overflows the kernel's 32-bit count to 0, "
                "so boot falls back to the CPU count"
            )
        elif rounded != nareas:
            warnings.append(f"{nareas} areas rounded up to {rounded} (a power of two)")
    if pos < end and text[pos] == ",":
        pos += 1
    rest = text[pos:]
    force = rest == "force"
    noforce = rest == "noforce"
    if rest and not (force or noforce):
        warnings += _explain_rest(rest, first, nareas)
        if not steps:
            warnings.append(f"swiotlb={text} has no effect at all")
    if not text:
        warnings.append("empty swiotlb= value: nothing is set")
    return SwiotlbParam(
        text=text,
        nslabs=nslabs,
        nareas=nareas,
        force=force,
        noforce=noforce,
        warnings=tuple(warnings),
        steps=tuple(steps),
        occurrences=(text,),
    )


def _cmdline_args(cmdline: str) -> list[tuple[str, str | None]]:
    """Split a command line into (param, value) the way the kernel's argument walker does.

    Whitespace separates arguments except inside double quotes; quotes around a whole argument
    or around the value are removed; a bare ``--`` ends the kernel's parameters.
    """
    args: list[tuple[str, str | None]] = []
    pos, end = 0, len(cmdline)
    while pos < end:
        while pos < end and cmdline[pos] in " \t\n\v\f\r":
            pos += 1
        if pos >= end:
            break
        start, in_quote = pos, False
        while pos < end and (in_quote or cmdline[pos] not in " \t\n\v\f\r"):
            if cmdline[pos] == '"':
                in_quote = not in_quote
            pos += 1
        token = cmdline[start:pos]
        if token.startswith('"'):
            token = token[1:-1] if token.endswith('"') and len(token) > 1 else token[1:]
        param, sep, value = token.partition("=")
        if sep and value.startswith('"'):
            value = value[1:-1] if value.endswith('"') and len(value) > 1 else value[1:]
        if not sep and param == "--":
            break
        args.append((param, value if sep else None))
    return args


def parse_cmdline(cmdline: str) -> SwiotlbParam | None:
    """All ``swiotlb=`` occurrences of a full command line, merged as the kernel applies them.

    Early parameters run in order against the same variables, so a later count overwrites an
    earlier one while ``force``/``noforce`` can only be switched on, never off (spec §6). The
    merged value keeps the steps in order (``steps``), the last given ``nslabs``/``nareas``, the
    raw values (``occurrences``) and as ``text`` the last one. ``None``: no ``swiotlb=`` at all.
    """
    values: list[str] = []
    bare = False
    for param, value in _cmdline_args(cmdline):
        if param != "swiotlb":
            continue
        if value is None:
            bare = True
        else:
            values.append(value)
    if not values:
        if not bare:
            return None
        return SwiotlbParam("", None, None, False, False, (_BARE,))
    parsed = [parse_swiotlb_param(v) for v in values]
    if len(parsed) == 1 and not bare:
        return parsed[0]
    warnings: list[str] = []
    if bare:
        warnings.append(_BARE)
    if len(parsed) > 1:
        warnings.append(
            f"swiotlb= given {len(parsed)} times: applied in order to the same settings "
            "(later counts overwrite earlier ones; force/noforce are never switched off)"
        )
        for p in parsed:
            warnings += [f"swiotlb={p.text}: {w}" for w in p.warnings]
    else:
        warnings += parsed[0].warnings
    steps = tuple(s for p in parsed for s in p.steps)
    kinds = [kind for kind, _ in steps]
    if "nareas" in kinds and "nslabs" in kinds:
        last_count = len(kinds) - 1 - kinds[::-1].index("nslabs")
        if kinds.index("nareas") < last_count > len(kinds) - 1 - kinds[::-1].index("nareas"):
            warnings.append(
                f"the slab count {steps[last_count][1]} comes after the area count, so it is never "
                "rounded to a power of two or to 128 slots per area (boot does not round again once "
                "areas are set)"
            )
    force = any(p.force for p in parsed)
    noforce = any(p.noforce for p in parsed)
    if force and noforce:
        warnings.append("both force and noforce are set: noforce wins, there is no pool")
    counts = [p.nslabs for p in parsed if p.nslabs is not None]
    areas = [p.nareas for p in parsed if p.nareas is not None]
    return SwiotlbParam(
        text=parsed[-1].text,
        nslabs=counts[-1] if counts else None,
        nareas=areas[-1] if areas else None,
        force=force,
        noforce=noforce,
        warnings=tuple(warnings),
        steps=steps,
        occurrences=tuple(values),
    )


# --------------------------------------------------------------------------------------------
# Building blocks (spec §1.3, §1.4, §1.6)


def adjust_nareas(nareas: int) -> int:
    """The area count ``swiotlb_adjust_nareas`` stores: zero means one, else the next power of two.

    The kernel keeps it in an ``unsigned int``: rounding a count above 2**31 overflows to 0.
    """
    if not 0 <= nareas <= U32_MASK:
        raise ValueError(f"nareas={nareas}: must be an unsigned 32-bit count (0..{U32_MASK})")
    if nareas == 0:
        return 1
    return roundup_pow_of_two(nareas) & U32_MASK


def round_up_default_nslabs(default_nslabs: int, default_nareas: int) -> int:
    """``round_up_default_nslabs``: at least 128 slots per area, then a power of two (spec §1.4).

    Nothing happens while no area count is known (``default_nareas == 0``); a count that is
    already a power of two and large enough is kept. This is what makes every area hold whole
    128-slot segments.
    """
    if default_nslabs < 0:
        raise ValueError(f"default_nslabs={default_nslabs}: must be >= 0")
    if not 0 <= default_nareas <= _MAX_AREAS:
        raise ValueError(
            f"default_nareas={default_nareas}: must be 0..{_MAX_AREAS} (128 x areas must fit the "
            "kernel's 32-bit arithmetic)"
        )
    if default_nareas == 0:
        return default_nslabs
    floor = IO_TLB_SEGSIZE * default_nareas
    if default_nslabs < floor:
        default_nslabs = floor
    elif is_power_of_two(default_nslabs):
        return default_nslabs
    if default_nslabs > 1 << 63:
        raise ValueError(f"default_nslabs={default_nslabs}: rounding would overflow 64 bits")
    return roundup_pow_of_two(default_nslabs)


def limit_nareas(nareas: int, nslots: int) -> int:
    """``limit_nareas`` (>= 6.5/6.6): no more areas than whole 128-slot segments.

    The result need not be a power of two for odd pool sizes (spec §1.4 ambiguity).
    """
    if nareas < 0 or nslots < 0:
        raise ValueError(f"limit_nareas({nareas}, {nslots}): both must be >= 0")
    return nslots // IO_TLB_SEGSIZE if nslots < nareas * IO_TLB_SEGSIZE else nareas


_SIZE = re.compile(r"\s*(0x[0-9a-f]+|\d+)\s*([kmgt]?)(i?b)?\s*", re.IGNORECASE)


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string: ``4096``, ``0x1000``, ``512M``, ``2G``, ``16GiB``.

    For our own options (RAM sizes, knobs); the kernel's ``swiotlb=`` takes no suffix and is
    read by :func:`parse_swiotlb_param`.
    """
    if isinstance(value, int):
        return value
    m = _SIZE.fullmatch(value)
    if m is None:
        raise ValueError(f"cannot read {value!r} as a size (examples: 4096, 0x1000, 512M, 2G, 16GiB)")
    return int(m.group(1), 0) << _UNIT_SHIFT.get(m.group(2).lower(), 0)


def fit_nareas(nareas: int, nslots: int) -> int:
    """The most areas, at most ``limit_nareas(nareas, nslots)``, that split ``nslots`` into
    equal power-of-two-counted areas of whole 128-slot segments (spec §1.4 invariant).

    The kernel's own pool sizes are powers of two, so ``limit_nareas`` alone suffices there;
    policies that size pools freely (grown by demand, chunks) need the rounding down.
    """
    n = limit_nareas(nareas, nslots)
    n = 1 << max(0, n.bit_length() - 1)  # a power of two
    while n > 1 and (nslots % n or (nslots // n) % IO_TLB_SEGSIZE):
        n >>= 1
    return max(n, 1)


def adjust_size(default_nslabs: int, size: int, default_nareas: int = 0) -> int:
    """``swiotlb_adjust_size``: the new ``default_nslabs`` for an arch-requested byte size.

    The guard compares with the *default value* 32768, not with "was swiotlb= given", so an
    explicit ``swiotlb=32768`` does not block it (spec §1.3). With areas already known the result
    is area-rounded at once.
    """
    if size < 0:
        raise ValueError(f"size={size}: must be >= 0 bytes")
    if default_nslabs != DEFAULT_NSLABS:
        return default_nslabs
    nslabs = align_up(align_up(size, IO_TLB_SIZE) >> IO_TLB_SHIFT, IO_TLB_SEGSIZE)
    return round_up_default_nslabs(nslabs, default_nareas)


def coco_pool_bytes(ram_bytes: int) -> int:
    """x86 ``mem_encrypt_setup_arch``: 6 % of guest RAM clamped to [64 MiB, 1 GiB] (spec §1.3).

    CoCo guests bounce every DMA, so the default scales with memory.
    """
    if ram_bytes < 0:
        raise ValueError(f"ram_bytes={ram_bytes}: must be >= 0")
    return min(max(ram_bytes * 6 // 100, IO_TLB_DEFAULT_SIZE), COCO_MAX_BYTES)


def arm64_kmalloc_bounce_bytes(ram_bytes: int, default_nslabs: int = DEFAULT_NSLABS) -> int:
    """arm64 (>= 6.7) size when only unaligned kmalloc buffers bounce: 1 MiB per GiB, at most the default.

    From scenarios.md "arm64 sizing (recent)": min(current default size, ceil(RAM / 1024)).
    """
    if ram_bytes < 0:
        raise ValueError(f"ram_bytes={ram_bytes}: must be >= 0")
    return min(default_nslabs << IO_TLB_SHIFT, -(-ram_bytes // 1024))


def max_mapping_size(min_align_mask: int) -> int:
    """``swiotlb_max_mapping_size`` (spec §1.6): 256 KiB minus the mask rounded up to 2 KiB.

    The mask value itself is rounded (not mask + 1). Masks of 256 KiB and more make the kernel's
    size_t subtraction wrap; the wrapped value is returned as the kernel would.
    """
    if not 0 <= min_align_mask <= U32_MASK:
        raise ValueError(f"min_align_mask={min_align_mask:#x}: must be an unsigned 32-bit mask")
    reserve = -(-min_align_mask // IO_TLB_SIZE) * IO_TLB_SIZE
    return (MAX_SEGMENT_BYTES - reserve) & U64_MASK


def x86_needs_swiotlb(ram_bytes: int, coco: bool, iommu: bool = False, *, sme_host: bool = False) -> bool:
    """x86 ``pci_swiotlb_detect`` (spec §1.5): does the kernel ask for a boot pool?

    Yes in a CoCo guest, on an SME host, or when RAM reaches above 4 GiB (``ram_bytes`` is taken
    as the top of RAM, so a 4 GiB machine with a PCI hole counts as more). ``iommu`` is the
    kernel's ``no_iommu`` (``iommu=off``), which switches the 4 GiB reason off.
    """
    if ram_bytes < 0:
        raise ValueError(f"ram_bytes={ram_bytes}: must be >= 0")
    return coco or sme_host or (not iommu and ram_bytes > FOUR_GIB)


def get_order(size: int, page_size: int = 4096) -> int:
    """``get_order``: smallest page order whose block holds ``size`` bytes (``size`` >= 1)."""
    if size < 1:
        raise ValueError(f"size={size}: get_order needs at least one byte")
    return ((size - 1) // page_size).bit_length()


# --------------------------------------------------------------------------------------------
# Boot-time plan (spec §1.5)


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """What the kernel would do at boot for the default pool.

    ``force_bounce`` is the kernel's ``mem->force_bounce``: set before the allocation loop, so it
    stays True if a forced pool could not be allocated; False when init returned earlier.
    ``default_nareas`` may be 0 when init returned before choosing areas.
    """

    enabled: bool
    nslabs: int
    nareas: int
    force_bounce: bool
    default_nslabs: int
    default_nareas: int
    log: tuple[str, ...]
    warnings: tuple[str, ...]
    reason: str = ""  # why there is no pool ("" when enabled)

    @property
    def size_bytes(self) -> int:
        return self.nslabs << IO_TLB_SHIFT

    @property
    def area_nslabs(self) -> int:
        return self.nslabs // self.nareas if self.nareas else 0


class _Boot:
    """The file-static variables of swiotlb.c plus the log, mutated in kernel order."""

    def __init__(self) -> None:
        self.default_nslabs = DEFAULT_NSLABS
        self.default_nareas = 0
        self.log: list[str] = []
        self.warnings: list[str] = []

    def adjust_nareas(self, n: int) -> None:
        self.default_nareas = adjust_nareas(n)
        self.log.append(f"{LOG_PREFIX}area num {self.default_nareas}.")
        new = round_up_default_nslabs(self.default_nslabs, self.default_nareas)
        if new != self.default_nslabs:
            self.warnings.append(
                f"{self.default_nslabs} slabs raised to {new} ({_human(new << IO_TLB_SHIFT)}) for "
                f"{self.default_nareas} areas: at least 128 slots per area, then a power of two"
            )
            self.default_nslabs = new
            mib = (new << IO_TLB_SHIFT) >> 20
            self.log.append(f"{LOG_PREFIX}SWIOTLB bounce buffer size roundup to {mib}MB")

    def adjust_size(self, size: int, why: str) -> None:
        if self.default_nslabs != DEFAULT_NSLABS:
            self.warnings.append(
                f"{why} ({_human(size)}) not applied: swiotlb= already set the size to "
                f"{self.default_nslabs} slabs"
            )
            return
        aligned = align_up(size, IO_TLB_SIZE)
        unrounded = adjust_size(self.default_nslabs, size)
        nslabs = round_up_default_nslabs(unrounded, self.default_nareas)
        self.default_nslabs = nslabs
        shown = nslabs << IO_TLB_SHIFT if nslabs != unrounded else aligned
        self.log.append(f"{LOG_PREFIX}SWIOTLB bounce buffer size adjusted to {shown >> 20}MB")


def _validate(
    ram_bytes: int, possible_cpus: int, arch: str, page_size: int, low: int | None, base: int | None
) -> None:
    if ram_bytes < 0:
        raise ValueError(f"ram_bytes={ram_bytes}: RAM size must be >= 0 bytes")
    if possible_cpus < 1:
        raise ValueError(f"possible_cpus={possible_cpus}: a machine has at least 1 possible CPU")
    if arch not in ARCHES:
        raise ValueError(f"arch={arch!r}: must be one of {', '.join(ARCHES)}")
    if not is_power_of_two(page_size) or page_size < 4096:
        raise ValueError(f"page_size={page_size}: must be a power of two >= 4096")
    if arch == "x86_64" and page_size != 4096:
        raise ValueError(f"page_size={page_size}: x86_64 only has 4096-byte pages")
    if low is not None and low < 0:
        raise ValueError(f"low_mem_contiguous={low}: must be >= 0 bytes or None (unlimited)")
    if base is not None and not 0 <= base <= U64_MASK:
        raise ValueError(f"pool_base={base}: must be a 64-bit physical address")


def plan_boot_pool(
    *,
    ram_bytes: int,
    possible_cpus: int,
    cmdline: str | SwiotlbParam | None = None,
    coco: bool = False,
    arch: str = "x86_64",
    page_size: int = 4096,
    needs_bounce: bool = True,
    low_mem_contiguous: int | None = None,
    any_memory: bool = False,
    kmalloc_bounce: bool = True,
    pool_base: int | None = None,
) -> PoolPlan:
    """Replay boot up to the default pool: parameters, arch sizing, ``swiotlb_init_remap`` (>= 6.6).

    ``cmdline`` is a full kernel command line (or an already parsed value). ``needs_bounce`` is
    the arch's "addressing limited" answer: on x86 pass :func:`x86_needs_swiotlb`; on arm64 it
    means RAM above the DMA zone limit. ``coco`` is a CoCo guest (x86 SEV/TDX, arm64 Realm): it
    forces bouncing (SWIOTLB_FORCE) and on x86 applies the 6 % size. On arm64 with
    ``kmalloc_bounce`` (CONFIG_DMA_BOUNCE_UNALIGNED_KMALLOC) and no other need, a small pool of
    1 MiB per GiB is still made. ``low_mem_contiguous`` is the largest block the boot allocator
    can give under the placement limit (all of memory when ``any_memory``, i.e. SWIOTLB_ANY);
    None means unlimited. ``pool_base`` only feeds the "mapped [mem ...]" log line (the end
    printed is exclusive, start + size). Raises ValueError for bad machine values and for area
    counts so large that the kernel's 32-bit 128 x areas wraps (not modelled).
    """
    _validate(ram_bytes, possible_cpus, arch, page_size, low_mem_contiguous, pool_base)
    param = parse_cmdline(cmdline) if isinstance(cmdline, str) else cmdline
    boot = _Boot()
    boot.warnings.extend(param.warnings if param else ())
    for kind, value in param.replay_steps() if param else ():
        if kind == "nslabs":
            boot.default_nslabs = value
        else:
            boot.adjust_nareas(value)
    cmd_force = bool(param and param.force)
    cmd_noforce = bool(param and param.noforce)

    addressing_limit = needs_bounce or coco
    if coco and arch == "x86_64":
        boot.adjust_size(coco_pool_bytes(ram_bytes), "CoCo 6% rule")
    elif arch == "arm64" and kmalloc_bounce and not addressing_limit:
        small = arm64_kmalloc_bounce_bytes(ram_bytes, boot.default_nslabs)
        boot.adjust_size(small, "arm64 kmalloc bounce sizing")
        addressing_limit = True

    def stop(reason: str, force_bounce: bool = False) -> PoolPlan:
        boot.warnings.append(f"no swiotlb pool: {reason}")
        return PoolPlan(False, 0, 0, force_bounce, boot.default_nslabs, boot.default_nareas,
                        tuple(boot.log), tuple(boot.warnings), reason)

    if not addressing_limit and not cmd_force:
        return stop("the platform does not need bouncing and swiotlb=force was not given")
    if cmd_noforce:
        return stop("swiotlb=noforce")
    force_bounce = cmd_force or coco
    if boot.default_nareas == 0:
        boot.adjust_nareas(possible_cpus)
    nslabs = boot.default_nslabs
    if nslabs == 0:
        return stop("0 slabs with areas already set: the kernel would divide by zero setting up areas "
                    "(not modelled)", force_bounce)
    if low_mem_contiguous is not None:
        for nslabs in halving_sizes(nslabs, IO_TLB_MIN_SLABS):
            if align_up(nslabs << IO_TLB_SHIFT, page_size) <= low_mem_contiguous:
                break
        else:
            return stop(f"the boot allocator cannot provide even {nslabs} slabs "
                        f"({_human(nslabs << IO_TLB_SHIFT)}) contiguous", force_bounce)
    nareas = limit_nareas(boot.default_nareas, nslabs)
    if nslabs != boot.default_nslabs:
        boot.log.append(
            f"{LOG_PREFIX}SWIOTLB bounce buffer size adjusted {boot.default_nslabs} -> {nslabs} slabs"
        )
        boot.warnings.append(
            f"only {_human(low_mem_contiguous or 0)} contiguous {'memory' if any_memory else 'low memory'}: "
            f"pool halved from {boot.default_nslabs} to {nslabs} slabs"
        )
        boot.default_nslabs = nslabs
    size = nslabs << IO_TLB_SHIFT
    if low_mem_contiguous is None and size > ram_bytes:
        boot.warnings.append(
            f"pool of {_human(size)} exceeds RAM ({_human(ram_bytes)}); pass low_mem_contiguous"
        )
    if not is_power_of_two(nareas):
        boot.warnings.append(f"{nareas} areas is not a power of two: area selection masks with nareas-1 "
                             "and some areas are never a starting point")
    if nslabs % nareas or (nslabs // nareas) % IO_TLB_SEGSIZE:
        boot.warnings.append(f"{nslabs} slots over {nareas} areas is not whole 128-slot segments per area: "
                             "a segment straddles two area locks")
    if pool_base is None:
        span = "0x????????????????-0x????????????????"
    else:
        span = f"{pool_base:#018x}-{pool_base + size:#018x}"
    boot.log.append(f"{LOG_PREFIX}mapped [mem {span}] ({size >> 20}MB)")
    return PoolPlan(True, nslabs, nareas, force_bounce, boot.default_nslabs, boot.default_nareas,
                    tuple(boot.log), tuple(boot.warnings))


# --------------------------------------------------------------------------------------------
# Late and grown pools (spec §1.5 swiotlb_init_late, §5.4 swiotlb_alloc_pool)


@dataclass(frozen=True, slots=True)
class LatePoolPlan:
    """Outcome of ``swiotlb_init_late``: the block order that succeeded and the pool shape."""

    enabled: bool
    nslabs: int
    nareas: int
    order: int
    default_nareas: int
    log: tuple[str, ...] = field(default=())


def _check_pages(page_size: int, max_page_order: int, max_free_order: int | None) -> None:
    if not is_power_of_two(page_size) or page_size < 4096:
        raise ValueError(f"page_size={page_size}: must be a power of two >= 4096")
    if max_page_order < 0:
        raise ValueError(f"max_page_order={max_page_order}: must be >= 0")
    if max_free_order is not None and max_free_order < -1:
        raise ValueError(f"max_free_order={max_free_order}: must be >= -1 (-1: nothing free) or None")


def _order_ok(order: int, max_page_order: int, max_free_order: int | None) -> bool:
    return order <= max_page_order and (max_free_order is None or order <= max_free_order)


def late_pool_plan(
    size_bytes: int,
    page_size: int = 4096,
    max_page_order: int = 10,
    *,
    default_nareas: int = 0,
    default_nslabs: int = DEFAULT_NSLABS,
    possible_cpus: int = 1,
    max_free_order: int | None = None,
) -> LatePoolPlan:
    """``swiotlb_init_late`` sizing (>= 6.6): one buddy block, shrinking by order on failure.

    Orders above ``max_page_order`` always fail, and the loop stops before the 1 MiB order, so a
    late 64 MiB request on 4 KiB pages ends as 4 MiB with a warning, and <= 1 MiB requests fail
    (spec §1.5). ``max_free_order`` is the largest order the buddy allocator can satisfy.
    """
    _check_pages(page_size, max_page_order, max_free_order)
    if size_bytes < IO_TLB_SIZE:
        raise ValueError(f"size_bytes={size_bytes}: must be at least one slot ({IO_TLB_SIZE} bytes)")
    boot = _Boot()
    boot.default_nslabs, boot.default_nareas = default_nslabs, default_nareas
    if default_nareas == 0:
        boot.adjust_nareas(possible_cpus)
    per_page = page_size >> IO_TLB_SHIFT
    nslabs = align_up(size_bytes >> IO_TLB_SHIFT, IO_TLB_SEGSIZE)
    first = order = get_order(nslabs << IO_TLB_SHIFT, page_size)
    found = False
    while per_page << order > IO_TLB_MIN_SLABS:
        if _order_ok(order, max_page_order, max_free_order):
            found = True
            break
        order -= 1
    if not found:
        return LatePoolPlan(False, 0, 0, order, boot.default_nareas, tuple(boot.log))
    nslabs = per_page << order
    if order != first:
        boot.log.append(f"{LOG_PREFIX}only able to allocate {(page_size << order) >> 20} MB")
    nareas = limit_nareas(boot.default_nareas, nslabs)
    return LatePoolPlan(True, nslabs, nareas, order, boot.default_nareas, tuple(boot.log))


def alloc_pool_plan(
    nslabs: int,
    nareas: int,
    *,
    minslabs: int = IO_TLB_MIN_SLABS,
    page_size: int = 4096,
    max_page_order: int = 10,
    max_free_order: int | None = None,
) -> tuple[int, int] | None:
    """``swiotlb_alloc_pool`` sizing (spec §5.4): (nslabs, nareas) of the pool obtained, or None.

    Growth is capped at one maximal buddy block (2048 slots with 4 KiB pages, order 10), then
    halves while the allocation fails and the size is above ``minslabs``.
    """
    _check_pages(page_size, max_page_order, max_free_order)
    if nslabs < 1 or nareas < 1 or minslabs < 0:
        raise ValueError(f"nslabs={nslabs}, nareas={nareas}, minslabs={minslabs}: need nslabs, nareas >= 1")
    cap = (page_size >> IO_TLB_SHIFT) << max_page_order
    if nslabs > cap:
        nslabs = cap
        nareas = limit_nareas(nareas, nslabs)
    for size in halving_sizes(nslabs, minslabs):
        if _order_ok(get_order(size << IO_TLB_SHIFT, page_size), max_page_order, max_free_order):
            return size, limit_nareas(nareas, size)
    return None


def halving_sizes(nslabs: int, minslabs: int) -> Iterator[int]:
    """The pool sizes the kernel tries in turn when an allocation fails (spec §1.5, §5.4):
    ``nslabs``, then halves rounded up to whole 128-slot segments, the last one at or below
    ``minslabs``. One generator for the boot pool, the plan and the policies' growth, so that
    the three cannot drift apart.

    With ``minslabs`` below one segment the kernel would retry the same size for ever; the
    sequence stops there instead (no caller of the kernel's does this).
    """
    while True:
        yield nslabs
        if nslabs <= minslabs:
            return
        halved = align_up(nslabs >> 1, IO_TLB_SEGSIZE)
        if halved >= nslabs:
            return
        nslabs = halved
