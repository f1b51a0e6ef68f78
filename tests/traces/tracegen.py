"""Writing small hand-made ftrace texts (tracefs layout) for the pairing and statistics tests."""

from __future__ import annotations

from pathlib import Path

from swiotlb.traces.canonical import CanonicalTrace, from_text

NVME = "0000:00:03.0"
VIRTIO = "0000:00:02.0"
XHCI = "0000:00:04.0"
ERR = "ffffffffffffffff"

# One CPU, a 1-area pool at 0x6fa00000: NVMe keeps the buffer's low 12 bits (offset 0x200 in
# slot 0, three slots); xhci's sg entries then take slot 3 (sub-page: slot aligned) and slot 4
# (a page: page aligned). The addresses are what the v6.12 allocator gives.
SMALL_TRACE = """# tracer: nop
# entries-in-buffer/entries-written: 9/9   #P:1
            init-1     [000] .....     1.000000: tracing_mark_write: MARK begin w
             fio-7     [000] d..1.     1.000010: swiotlb_bounced: dev_name: 0000:00:03.0 dma_mask=ffffffffffffffff dev_addr=12345200 size=4096 FORCE
             fio-7     [000] d..1.     1.000020: dma_map_page: 0000:00:03.0 dir=TO_DEVICE dma_addr=6fa00200 size=4096 phys_addr=12345200 attrs=
             fio-7     [000] d..1.     1.000030: swiotlb_bounced: dev_name: 0000:00:04.0 dma_mask=ffffffffffffffff dev_addr=7000 size=512 FORCE
             fio-7     [000] d..1.     1.000031: swiotlb_bounced: dev_name: 0000:00:04.0 dma_mask=ffffffffffffffff dev_addr=9000 size=4096 FORCE
             fio-7     [000] d..1.     1.000040: dma_map_sg: 0000:00:04.0 dir=FROM_DEVICE nents=2/2 ents=2/2 dma_addrs={0x6fa01800,0x6fa02000} sizes={0x200,0x1000} phys_addrs={0x7000,0x9000} attrs=
          <idle>-0     [000] d.h1.     1.000050: dma_unmap_page: 0000:00:03.0 dir=TO_DEVICE dma_addr=6fa00200 size=4096 attrs=
          <idle>-0     [000] ..s1.     1.000060: dma_unmap_sg: 0000:00:04.0 dir=FROM_DEVICE phys_addrs={0x7000,0x9000} attrs=
            init-1     [000] .....     1.000070: tracing_mark_write: MARK end w
"""


class Trace:
    """Lines in file order; ``ts`` is in microseconds, every method returns the new line's number."""

    HEADER = ("# tracer: nop", "#", "# entries-in-buffer/entries-written: 0/0   #P:2", "#")

    def __init__(self) -> None:
        self.lines: list[str] = list(self.HEADER)

    def add(self, cpu: int, ts_us: int, event: str, body: str, task: str = "fio-100") -> int:
        self.lines.append(f"{task:>16} [{cpu:03d}] ..... {ts_us // 10**6:5d}.{ts_us % 10**6:06d}: {event}: {body}")
        return len(self.lines)

    def mark(self, cpu: int, ts: int, text: str) -> int:
        return self.add(cpu, ts, "tracing_mark_write", text, "init-1")

    def bounced(self, cpu: int, ts: int, dev: str, orig: int, size: int) -> int:
        return self.add(cpu, ts, "swiotlb_bounced",
                        f"dev_name: {dev} dma_mask=ffffffffffffffff dev_addr={orig:x} size={size} FORCE")

    def map_page(self, cpu: int, ts: int, dev: str, dma: int | str, size: int, phys: int,
                 direction: str = "TO_DEVICE") -> int:
        d = dma if isinstance(dma, str) else f"{dma:x}"
        return self.add(cpu, ts, "dma_map_page",
                        f"{dev} dir={direction} dma_addr={d} size={size} phys_addr={phys:x} attrs=")

    def unmap_page(self, cpu: int, ts: int, dev: str, dma: int, size: int, direction: str = "TO_DEVICE") -> int:
        return self.add(cpu, ts, "dma_unmap_page", f"{dev} dir={direction} dma_addr={dma:x} size={size} attrs=")

    def map_sg(self, cpu: int, ts: int, dev: str, dmas: list[int], sizes: list[int], phys: list[int],
               direction: str = "FROM_DEVICE") -> int:
        n = len(dmas)
        arr = lambda vals: "{" + ",".join(f"0x{v:x}" for v in vals) + "}"  # noqa: E731
        return self.add(cpu, ts, "dma_map_sg",
                        f"{dev} dir={direction} nents={n}/{n} ents={n}/{n} dma_addrs={arr(dmas)} "
                        f"sizes={arr(sizes)} phys_addrs={arr(phys)} attrs=")

    def unmap_sg(self, cpu: int, ts: int, dev: str, phys: list[int], direction: str = "FROM_DEVICE") -> int:
        arr = "{" + ",".join(f"0x{v:x}" for v in phys) + "}"
        return self.add(cpu, ts, "dma_unmap_sg", f"{dev} dir={direction} phys_addrs={arr} attrs=")

    def write(self, path: Path) -> Path:
        path.write_text("".join(line + "\n" for line in self.lines))
        return path

    def canonical(self, tmp_path: Path, name: str = "t.trace.txt") -> CanonicalTrace:
        return from_text(self.write(tmp_path / name))


def rows_by(trace: CanonicalTrace, column: str) -> dict[int, dict[str, object]]:
    """Rows keyed by one integer column (e.g. ``alloc_line``)."""
    return {int(r[column]): r for r in trace.rows()}
