"""PhysicalMemory: sparse real bytes with memmove copies and clear range errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swiotlb.memory import MemoryAccessError, PhysicalMemory

GIB = 1 << 30


def test_unwritten_memory_reads_as_zero_and_costs_nothing() -> None:
    mem = PhysicalMemory(16 * GIB)
    assert mem.read(12 * GIB + 5, 100) == bytes(100)
    assert mem.resident_bytes == 0


def test_a_16_gib_guest_only_holds_the_pages_it_wrote() -> None:
    mem = PhysicalMemory(16 * GIB)
    mem.write(16 * GIB - 3, b"end")
    mem.write(0, b"start")
    assert mem.read(16 * GIB - 3, 3) == b"end"
    assert mem.touched_pages() == [0, (16 * GIB >> 12) - 1]
    assert mem.resident_bytes == 2 * 4096


def test_writes_and_reads_span_page_boundaries() -> None:
    mem = PhysicalMemory(1 << 20)
    data = bytes(range(256)) * 40  # 10240 bytes over four pages
    mem.write(4096 - 7, data)
    assert mem.read(4096 - 7, len(data)) == data
    assert mem.read(4096 - 8, 1) == b"\0"
    assert mem.read(4096 - 7 + len(data), 1) == b"\0"


def test_write_accepts_memoryviews_of_any_format() -> None:
    mem = PhysicalMemory(1 << 16)
    words = memoryview(bytearray(range(16))).cast("I")  # 4 items, 16 bytes
    mem.write(4090, words)
    assert mem.read(4090, 16) == bytes(range(16))


@pytest.mark.parametrize("dst,src", [(100, 0), (0, 100), (4000, 4096), (4096, 4000)])
def test_copy_has_memmove_semantics(dst: int, src: int) -> None:
    mem = PhysicalMemory(1 << 16)
    ref = bytearray(1 << 16)
    data = bytes((i * 7) & 0xFF for i in range(5000))
    mem.write(0, data)
    ref[0:5000] = data
    mem.copy(dst, src, 3000)
    ref[dst : dst + 3000] = bytes(ref[src : src + 3000])
    assert mem.read(0, 1 << 16) == bytes(ref)


def test_fill_sets_bytes_and_zero_fill_releases_whole_pages() -> None:
    mem = PhysicalMemory(1 << 16)
    mem.fill(10, 8192, 0xAB)
    assert mem.read(9, 8194) == b"\0" + b"\xab" * 8192 + b"\0"
    mem.fill(5, 3 * 4096 - 10, 0)
    assert mem.read(0, 3 * 4096) == bytes(3 * 4096)
    assert mem.touched_pages() == [0, 2]  # partial pages stay, the whole page 1 is dropped
    with pytest.raises(ValueError, match="not a byte"):
        mem.fill(0, 1, 256)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.read(0xFFF0, 0x20),
        lambda m: m.write(0xFFFF, b"ab"),
        lambda m: m.read(-1, 1),
        lambda m: m.copy(0, 0xFFF0, 0x20),
        lambda m: m.copy(0xFFF0, 0, 0x20),
        lambda m: m.fill(0x10000, 1),
    ],
)
def test_out_of_range_access_names_the_range(call) -> None:  # type: ignore[no-untyped-def]
    mem = PhysicalMemory(0x10000)
    before = mem.snapshot()
    with pytest.raises(MemoryAccessError, match=r"outside RAM \[0, 0x10000\)") as info:
        call(mem)
    assert "0x" in str(info.value)
    assert mem.snapshot() == before


def test_bad_geometry_is_rejected() -> None:
    with pytest.raises(ValueError, match="power of two"):
        PhysicalMemory(1 << 20, page_size=3000)
    with pytest.raises(ValueError, match="multiple of the page size"):
        PhysicalMemory(5000)


def test_snapshots_compare_bytes_not_storage() -> None:
    mem = PhysicalMemory(1 << 16)
    empty = mem.snapshot()
    mem.write(5000, bytes(10))  # creates a page but stays all zero
    assert mem.snapshot() == empty
    assert mem.digest() == PhysicalMemory(1 << 16).digest()
    mem.write(9000, b"x")
    after = mem.snapshot()
    assert after != empty
    assert after.diff(empty) == [2]
    assert mem.digest() != PhysicalMemory(1 << 16).digest()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("w"), st.integers(0, 3 * 4096), st.binary(min_size=0, max_size=6000)),
            st.tuples(st.just("c"), st.integers(0, 3 * 4096), st.integers(0, 3 * 4096), st.integers(0, 5000)),
            st.tuples(st.just("f"), st.integers(0, 3 * 4096), st.integers(0, 5000), st.integers(0, 255)),
        ),
        max_size=25,
    )
)
def test_behaves_like_one_flat_bytearray(ops) -> None:  # type: ignore[no-untyped-def]
    size = 4 * 4096
    mem = PhysicalMemory(size)
    ref = bytearray(size)
    for op in ops:
        if op[0] == "w":
            _, addr, data = op
            data = data[: size - addr]
            mem.write(addr, data)
            ref[addr : addr + len(data)] = data
        elif op[0] == "c":
            _, dst, src, n = op
            n = min(n, size - dst, size - src)
            mem.copy(dst, src, n)
            ref[dst : dst + n] = bytes(ref[src : src + n])
        else:
            _, addr, n, value = op
            n = min(n, size - addr)
            mem.fill(addr, n, value)
            ref[addr : addr + n] = bytes([value]) * n
    assert mem.read(0, size) == bytes(ref)
