"""The real-machine capture script (``lab/capture.sh``) and the ``capture`` command.

The functional tests run the script against a fake tracefs/debugfs/proc/sysfs tree and a
fake dmesg, through the SWIOTLB_* root overrides the script documents.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from swiotlb.lab.capture import capture_cmd, script_text

SCRIPT = Path(__file__).resolve().parents[2] / "src" / "swiotlb" / "lab" / "capture.sh"

DMESG = """\
[    0.000000] Linux version 6.12.117 (fake)
[    0.000000] Command line: console=ttyS0 memblock=debug swiotlb=force
[    0.000000] memblock_reserve: [0x0000000001000000-0x0000000001ffffff] setup_arch+0x1/0x2
[    0.000000] Kernel command line: console=ttyS0 memblock=debug swiotlb=force
[    0.000000] software IO TLB: area num 1.
[    0.000000] memblock_alloc_try_nid: 67108864 bytes align=0x1000 nid=-1 from=0x0000000000000000 \
max_addr=0x00000000ffffffff swiotlb_init_remap+0xf2/0x300
[    0.000000] memblock_reserve: [0x000000006fa00000-0x00000000739fffff] memblock_alloc_range_nid+0xbd/0x180
[    0.000000] memblock_alloc_try_nid: 786432 bytes align=0x1000 nid=-1 from=0x0000000000000000 \
max_addr=0x0000000000000000 swiotlb_init_remap+0x169/0x300
[    0.000000] memblock_reserve: [0x000000007ba44000-0x000000007bb03fff] memblock_alloc_range_nid+0xbd/0x180
[    0.000000] memblock_alloc_try_nid: 4096 bytes align=0x1000 nid=-1 from=0x0 max_addr=0x0 alloc_pages+0x1/0x2
[    0.000000] memblock_reserve: [0x000000007c000000-0x000000007c000fff] memblock_alloc_range_nid+0xbd/0x180
[    1.000000] virtio_blk virtio0: [vda] 4096 512-byte logical blocks
[   20.544510] nvme 0000:00:03.0: swiotlb buffer is full (sz: 262144 bytes), total 32768 (slots), used 32700 (slots)
[   32.506699] swiotlb_tbl_map_single: 139 callbacks suppressed
[   33.000000] a "quoted" \\backslash\tand tab swiotlb line
"""

SWIOTLB_DMESG = [line for line in DMESG.splitlines()
                 if any(k in line.lower() for k in ("swiotlb", "software io tlb", "buffer is full",
                                                    "callbacks suppressed"))]

TRACE = """\
# tracer: nop
#
# entries-in-buffer/entries-written: 10/12   #P:2
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
              sh-100     [000] .....    10.000001: tracing_mark_write: MARK begin one
             fio-101     [001] d..1.    10.000100: swiotlb_bounced: dev_name: 0000:00:03.0 \
dma_mask=ffffffffffffffff dev_addr=11f960f8 size=16 FORCE
             fio-101     [001] d..1.    10.000200: dma_map_page: 0000:00:03.0 dir=TO_DEVICE \
dma_addr=6fa00000 size=16 phys_addr=11f960f8 attrs=
             fio-101     [001] d.h1.    10.000300: dma_unmap_page: 0000:00:03.0 dir=TO_DEVICE \
dma_addr=6fa00000 size=16 attrs=
              sh-100     [000] .....    10.500000: tracing_mark_write: MARK end one
CPU:1 [LOST 2 EVENTS]
              sh-100     [000] .....    11.000000: tracing_mark_write: MARK begin two
             fio-102     [000] d..1.    11.000100: swiotlb_bounced: dev_name: 0000:00:03.0 \
dma_mask=ffffffffffffffff dev_addr=22000000 size=4096 FORCE
             fio-102     [000] d..1.    11.000200: dma_map_page: 0000:00:03.0 dir=FROM_DEVICE \
dma_addr=6fa01000 size=4096 phys_addr=22000000 attrs=
              sh-100     [000] .....    11.500000: tracing_mark_write: MARK end two
"""

STATS = {
    0: "entries: 6\noverrun: 0\ncommit overrun: 0\nbytes: 560\noldest event ts:    10.000001\n"
       "now ts:    12.317478\ndropped events: 0\nread events: 0\n",
    1: "entries: 4\noverrun: 2\ncommit overrun: 0\nbytes: 380\noldest event ts:    10.000100\n"
       "now ts:    12.317480\ndropped events: 0\nread events: 0\n",
}

EVENTS = {
    "dma": ["dma_map_page", "dma_unmap_page", "dma_map_sg", "dma_unmap_sg", "dma_alloc", "dma_free",
            "dma_sync_single_for_cpu", "dma_map_resource"],
    "swiotlb": ["swiotlb_bounced"],
    "block": ["block_rq_issue"],
}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _features(*bits: int) -> str:
    chars = ["0"] * 64
    for bit in bits:
        chars[bit] = "1"
    return "".join(chars) + "\n"


def _fake_tree(root: Path) -> dict[str, str]:
    """A fake machine: tracefs, debugfs, proc, sysfs and dmesg; returns the environment."""
    t = root / "tracefs"
    for name, text in {"trace": "# stale contents, cleared by the script\n", "trace_marker": "",
                       "tracing_on": "0\n", "buffer_size_kb": "1408\n", "buffer_total_size_kb": "2816\n",
                       "trace_clock": "[global] local counter uptime\n", "current_tracer": "function\n",
                       "set_event": "block:block_rq_issue\n", "events/enable": "X\n"}.items():
        _write(t / name, text)
    for system, events in EVENTS.items():
        for ev in events:
            _write(t / "events" / system / ev / "enable", "0\n")
            _write(t / "events" / system / ev / "format",
                   f"name: {ev}\nID: 1\nformat:\n\tfield:int x;\toffset:0;\tsize:4;\tsigned:1;\n\n"
                   f'print fmt: "{ev} %s dir=%s", __get_str(device), "x"\n')
    for cpu, text in STATS.items():
        _write(t / "per_cpu" / f"cpu{cpu}" / "stats", text)

    d = root / "debugfs"
    for name, value in {"io_tlb_nslabs": 32768, "io_tlb_used": 0, "io_tlb_used_hiwater": 259}.items():
        _write(d / "swiotlb" / name, f"{value}\n")

    p = root / "proc"
    _write(p / "cmdline", "console=ttyS0 memblock=debug swiotlb=force\n")
    _write(p / "cpuinfo", "processor\t: 0\nmodel name\t: fake\n\nprocessor\t: 1\nmodel name\t: fake\n")
    _write(p / "meminfo", "MemTotal:        1879312 kB\nMemFree:         1000000 kB\nMemAvailable:    1500000 kB\n")
    _write(p / "uptime", "123.45 200.00\n")
    _write(p / "sys" / "kernel" / "osrelease", "6.12.117-fake\n")
    _write(p / "mounts", "")

    s = root / "sysfs"
    pci = s / "devices" / "pci0000:00"
    vd = pci / "0000:00:02.0" / "virtio0"
    _write(vd / "features", _features(0, 32, 33))
    _write(vd / "device", "0x0002\n")
    blk = vd / "block" / "vda"
    for name, value in {"size": "4096", "queue/logical_block_size": "512", "queue/max_sectors_kb": "1280",
                        "queue/max_hw_sectors_kb": "2147483647", "queue/max_segments": "254",
                        "queue/max_segment_size": "262144", "queue/dma_alignment": "511",
                        "queue/virt_boundary_mask": "0", "queue/nr_requests": "256"}.items():
        _write(blk / name, value + "\n")
    (blk / "device").symlink_to(vd)
    legacy = pci / "0000:00:05.0" / "virtio1"
    _write(legacy / "features", _features(0, 32))
    _write(legacy / "device", "0x0002\n")
    (legacy / "block" / "vdb").mkdir(parents=True)
    (legacy / "block" / "vdb" / "device").symlink_to(legacy)
    for dev in ("0000:00:02.0", "0000:00:05.0"):
        for name, value in {"vendor": "0x1af4", "device": "0x1042", "class": "0x010000"}.items():
            _write(pci / dev / name, value + "\n")
    (s / "bus" / "pci" / "devices").mkdir(parents=True)
    (s / "bus" / "virtio" / "devices").mkdir(parents=True)
    (s / "block").mkdir()
    for dev in ("0000:00:02.0", "0000:00:05.0"):
        (s / "bus" / "pci" / "devices" / dev).symlink_to(pci / dev)
    (s / "bus" / "virtio" / "devices" / "virtio0").symlink_to(vd)
    (s / "bus" / "virtio" / "devices" / "virtio1").symlink_to(legacy)
    (s / "block" / "vda").symlink_to(blk)
    (s / "block" / "vdb").symlink_to(legacy / "block" / "vdb")

    _write(root / "dmesg.txt", DMESG)
    _write(root / "trace.fixture", TRACE)
    env = dict(os.environ)
    env.update({
        "SWIOTLB_TRACEFS": str(t), "SWIOTLB_DEBUGFS": str(d), "SWIOTLB_PROC": str(p),
        "SWIOTLB_SYSFS": str(s), "SWIOTLB_DMESG_CMD": f"cat '{root / 'dmesg.txt'}'",
    })
    return env


def _run_capture(root: Path, *, writer: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    env = _fake_tree(root)
    env["SWIOTLB_PYTHON"] = writer
    t, d = Path(env["SWIOTLB_TRACEFS"]), Path(env["SWIOTLB_DEBUGFS"])
    # workload one: records what the marker file held when it ran, raises the hiwater, and
    # plays the kernel by filling the (cleared) trace; workload two is a plain command
    one = (f"cat '{t}/trace_marker' > '{root}/seen_marker'; echo 17 > '{d}/swiotlb/io_tlb_used_hiwater'; "
           f"echo 3 > '{d}/swiotlb/io_tlb_used'; cp '{root}/trace.fixture' '{t}/trace'")
    out = root / "out"
    proc = subprocess.run(["sh", str(SCRIPT), "-o", str(out), "-n", "two", "-d", "fake machine",
                           "-w", f"one={one}", "--", "echo", "hi"],
                          env=env, capture_output=True, text=True, timeout=120)
    return proc, out


def test_script_parses_with_sh_n() -> None:
    for shell in ("sh", "dash", "bash"):
        if shutil.which(shell):
            proc = subprocess.run([shell, "-n", str(SCRIPT)], capture_output=True, text=True)
            assert proc.returncode == 0, f"{shell} -n: {proc.stderr}"
    if shutil.which("busybox"):
        proc = subprocess.run(["busybox", "sh", "-n", str(SCRIPT)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_script_passes_shellcheck() -> None:
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (apt-get install shellcheck); sh -n still checks the syntax")
    proc = subprocess.run(["shellcheck", "-s", "sh", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_packaged_script_is_the_source() -> None:
    assert script_text() == SCRIPT.read_text()
    assert script_text().startswith("#!/bin/sh\n")


def test_capture_command_prints_and_writes_the_script(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(capture_cmd, ["--print-script"])
    assert printed.exit_code == 0, printed.output
    assert printed.output == SCRIPT.read_text()

    target = tmp_path / "cap.sh"
    written = runner.invoke(capture_cmd, ["--write", str(target)])
    assert written.exit_code == 0, written.output
    assert target.read_text() == SCRIPT.read_text()
    assert target.stat().st_mode & stat.S_IXUSR
    again = runner.invoke(capture_cmd, ["--write", str(target)])
    assert again.exit_code != 0 and "exists" in again.output
    assert runner.invoke(capture_cmd, ["--write", str(target), "--force"]).exit_code == 0
    into_dir = runner.invoke(capture_cmd, ["--write", str(tmp_path)])
    assert into_dir.exit_code == 0 and (tmp_path / "capture.sh").stat().st_mode & stat.S_IXUSR

    usage = runner.invoke(capture_cmd, [])
    assert usage.exit_code == 0 and "swiotlb replay" in usage.output and "--meta" in usage.output
    both = runner.invoke(capture_cmd, ["--print-script", "--write", str(target)])
    assert both.exit_code != 0


def test_script_without_workload_fails_with_usage(tmp_path: Path) -> None:
    env = _fake_tree(tmp_path)
    proc = subprocess.run(["sh", str(SCRIPT), "-o", str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "usage:" in proc.stderr


def _check_meta(meta: dict[str, Any], root: Path, out: Path) -> None:
    # identity and files
    assert meta["name"] == "two" and meta["description"] == "fake machine"
    assert meta["trace_file"] == "two.trace.txt.gz"
    raw = gzip.decompress((out / "two.trace.txt.gz").read_bytes()).decode()
    assert raw == TRACE
    assert meta["trace_text_bytes"] == len(TRACE.encode()) and meta["trace_text_lines"] == TRACE.count("\n")
    assert meta["trace_text_sha256"] == hashlib.sha256(TRACE.encode()).hexdigest()
    assert meta["trace_gz_bytes"] == (out / "two.trace.txt.gz").stat().st_size

    # kernel and machine
    assert meta["kernel"]["release"] == "6.12.117-fake"
    assert meta["guest"]["kernel_cmdline"] == "console=ttyS0 memblock=debug swiotlb=force"
    assert meta["guest"]["vcpus"] == 2
    assert meta["guest"]["ram_mb"] == 1879312 // 1024
    assert meta["guest"]["memtotal"] == "MemTotal:        1879312 kB"

    # the pool, from the memblock=debug lines
    sw = meta["swiotlb"]
    assert sw["pool_phys_start"] == "0x6fa00000"
    assert sw["pool_phys_end_inclusive"] == "0x739fffff"
    assert sw["pool_bytes"] == 64 << 20 and sw["io_tlb_nslabs"] == 32768 and sw["area_num"] == 1
    assert sw["dmesg_lines_all"] == SWIOTLB_DMESG
    assert sw["memblock_debug_lines"] == [line for line in DMESG.splitlines()
                                          if "swiotlb_init_remap" in line or "0x000000006fa00000" in line
                                          or "0x000000007ba44000" in line]
    assert sw["buffer_full_messages"] == 1
    assert sw["debugfs_final"] == {"io_tlb_nslabs": 32768, "io_tlb_used": 3, "io_tlb_used_hiwater": 0}

    # workloads, in order, with markers and debugfs snapshots
    one, two = meta["workloads"]
    assert [w["name"] for w in meta["workloads"]] == ["one", "two"]
    assert one["marker_begin"] == "MARK begin one" and one["marker_end"] == "MARK end one"
    assert two["marker_begin"] == "MARK begin two" and two["marker_end"] == "MARK end two"
    assert one["swiotlb_debugfs"] == {
        "before": {"io_tlb_nslabs": 32768, "io_tlb_used": 0, "io_tlb_used_hiwater": 259},
        "after_reset": {"io_tlb_nslabs": 32768, "io_tlb_used": 0, "io_tlb_used_hiwater": 0},
        "after": {"io_tlb_nslabs": 32768, "io_tlb_used": 3, "io_tlb_used_hiwater": 17},
    }
    assert two["swiotlb_debugfs"]["before"]["io_tlb_used_hiwater"] == 17
    assert two["swiotlb_debugfs"]["after_reset"]["io_tlb_used_hiwater"] == 0
    assert two["command"] == "echo hi" and two["exit_status"] == 0 and one["exit_status"] == 0
    assert one["trace_ts_begin"] == 10.000001 and one["trace_ts_end"] == 10.5
    assert two["trace_ts_begin"] == 11.0 and two["trace_ts_end"] == 11.5
    assert one["event_counts"] == {"dma_map_page": 1, "dma_unmap_page": 1, "swiotlb_bounced": 1}
    assert two["event_counts"] == {"dma_map_page": 1, "swiotlb_bounced": 1}
    assert meta["event_counts_total"] == {"dma_map_page": 2, "dma_unmap_page": 1, "swiotlb_bounced": 2}
    assert (root / "seen_marker").read_text() == "MARK begin one\n"

    # tracing: header, per-CPU stats, lost events, events and their print fmt
    tr = meta["tracing"]
    assert tr["header"] == {"entries_in_buffer": 10, "entries_written": 12, "cpus": 2,
                            "header_line": "# entries-in-buffer/entries-written: 10/12   #P:2"}
    assert tr["lost_events"] == 2 and tr["lost_events_from_header"] == 2
    assert tr["lost_events_per_cpu_overrun_dropped"] == 2 and tr["lost_event_lines_in_text"] == 2
    assert tr["per_cpu_stats"]["cpu1"] == {"entries": 4, "overrun": 2, "commit overrun": 0, "bytes": 380,
                                           "oldest event ts": 10.0001, "now ts": 12.31748,
                                           "dropped events": 0, "read events": 0}
    assert tr["per_cpu_stats"]["cpu0"]["entries"] == 6
    expected = sorted(f"dma:{e}" for e in EVENTS["dma"]) + ["swiotlb:swiotlb_bounced"]
    assert sorted(tr["enabled_events"]) == expected
    assert set(tr["print_fmt"]) == {e.split(":")[1] for e in expected}
    assert tr["print_fmt"]["dma_map_page"] == '"dma_map_page %s dir=%s", __get_str(device), "x"'
    assert tr["available_dma_events"] == sorted(EVENTS["dma"])
    assert tr["available_swiotlb_events"] == ["swiotlb_bounced"]
    assert tr["trace_clock"] == "local"
    assert tr["buffer"].startswith("buffer_size_kb=")

    # devices: the virtio disk with VIRTIO_F_ACCESS_PLATFORM uses the DMA API, the other does not
    by_blk = {dev["block_device"]: dev for dev in meta["devices"] if "block_device" in dev}
    assert by_blk["vda"]["pci"] == "0000:00:02.0" and by_blk["vda"]["uses_dma_api"] is True
    assert by_blk["vda"]["max_segment_size"] == "262144"
    assert by_blk["vdb"]["pci"] == "0000:00:05.0" and by_blk["vdb"]["uses_dma_api"] is False
    virtio = {v["name"]: v for v in meta["virtio_devices"]}
    assert virtio["virtio0"]["access_platform"] is True and virtio["virtio1"]["access_platform"] is False
    assert any("virtio1" in w and "VIRTIO_F_ACCESS_PLATFORM" in w for w in meta["capture"]["warnings"])
    assert any("lost" in w for w in meta["capture"]["warnings"])
    assert len(meta["pci_devices"]) == 2


@pytest.mark.parametrize("writer", ["python3", "none"])
def test_capture_on_fake_machine(tmp_path: Path, writer: str) -> None:
    proc, out = _run_capture(tmp_path, writer=writer)
    assert proc.returncode == 0, proc.stderr
    assert (out / "two.trace.txt.gz").read_bytes()[:2] == b"\x1f\x8b"
    meta = json.loads((out / "two.meta.json").read_text())
    assert meta["capture"]["json_writer"] == ("python3" if writer == "python3" else "sh")
    _check_meta(meta, tmp_path, out)
    assert "VIRTIO_F_ACCESS_PLATFORM" in proc.stderr

    # the tracing state is left as found; the markers went through trace_marker
    t = tmp_path / "tracefs"
    assert (t / "trace_marker").read_text() == "MARK end two\n"
    assert (t / "tracing_on").read_text() == "0\n"
    assert (t / "buffer_size_kb").read_text() == "1408\n"
    assert (t / "trace_clock").read_text() == "global\n"
    assert (t / "events" / "dma" / "dma_map_page" / "enable").read_text() == "0\n"
    assert (t / "events" / "block" / "block_rq_issue" / "enable").read_text() == "1\n"
    assert not (out / ".two.capture").exists()

    # refuses to overwrite without -f
    again = subprocess.run(["sh", str(SCRIPT), "-o", str(out), "-n", "two", "--", "true"],
                           env=_env_of(tmp_path), capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "exists" in again.stderr


def _env_of(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"SWIOTLB_TRACEFS": str(root / "tracefs"), "SWIOTLB_DEBUGFS": str(root / "debugfs"),
                "SWIOTLB_PROC": str(root / "proc"), "SWIOTLB_SYSFS": str(root / "sysfs"),
                "SWIOTLB_DMESG_CMD": f"cat '{root / 'dmesg.txt'}'"})
    return env


def test_python_and_sh_writers_agree(tmp_path: Path) -> None:
    metas = []
    for writer in ("python3", "none"):
        root = tmp_path / writer
        root.mkdir()
        proc, out = _run_capture(root, writer=writer)
        assert proc.returncode == 0, proc.stderr
        meta = json.loads((out / "two.meta.json").read_text())
        for volatile in ("json_writer", "date_utc"):
            meta["capture"].pop(volatile)
        for w in meta["workloads"]:
            w["command"] = w["command"].replace(str(root), "ROOT")
        meta["capture"]["warnings"] = [w.replace(str(root), "ROOT") for w in meta["capture"]["warnings"]]
        for dev in meta["devices"]:
            dev["path"] = dev["path"].replace(str(root), "ROOT")
        metas.append(meta)
    assert metas[0] == metas[1]


def test_pool_from_dmesg_mapped_line(tmp_path: Path) -> None:
    env = _fake_tree(tmp_path)
    (tmp_path / "dmesg.txt").write_text(
        "[    0.000000] Command line: swiotlb=force\n"
        "[    0.000000] software IO TLB: area num 4.\n"
        "[    0.400000] software IO TLB: mapped [mem 0x00000000bbfd0000-0x00000000bffd0000] (64MB)\n")
    proc = subprocess.run(["sh", str(SCRIPT), "-o", str(tmp_path / "out"), "-n", "m", "--", "true"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    sw = json.loads((tmp_path / "out" / "m.meta.json").read_text())["swiotlb"]
    assert sw["pool_phys_start"] == "0xbbfd0000" and sw["pool_phys_end_inclusive"] == "0xbffcffff"
    assert sw["pool_bytes"] == 64 << 20 and sw["area_num"] == 4 and sw["memblock_debug_lines"] == []


def test_unknown_pool_is_reported(tmp_path: Path) -> None:
    env = _fake_tree(tmp_path)
    (tmp_path / "dmesg.txt").write_text("[    5.000000] nothing about the pool here\n")
    proc = subprocess.run(["sh", str(SCRIPT), "-o", str(tmp_path / "out"), "-n", "u", "--", "true"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "memblock=debug" in proc.stderr
    sw = json.loads((tmp_path / "out" / "u.meta.json").read_text())["swiotlb"]
    assert sw["pool_phys_start"] is None and sw["pool_bytes"] is None and "memblock=debug" in sw["pool_note"]


def test_capture_with_busybox_only(tmp_path: Path) -> None:
    """Busybox ash and applets alone (no python3, no GNU tools): the sh JSON writer."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed (apt-get install busybox)")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for applet in applets:
        (bindir / applet).symlink_to(busybox)
    root = tmp_path / "machine"
    root.mkdir()
    env = _fake_tree(root)
    env["PATH"] = str(bindir)
    t, d = root / "tracefs", root / "debugfs"
    one = (f"cat '{t}/trace_marker' > '{root}/seen_marker'; echo 17 > '{d}/swiotlb/io_tlb_used_hiwater'; "
           f"echo 3 > '{d}/swiotlb/io_tlb_used'; cp '{root}/trace.fixture' '{t}/trace'")
    out = root / "out"
    proc = subprocess.run([str(bindir / "sh"), str(SCRIPT), "-o", str(out), "-n", "two", "-d", "fake machine",
                           "-w", f"one={one}", "--", "echo", "hi"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((out / "two.meta.json").read_text())
    assert meta["capture"]["json_writer"] == "sh"
    _check_meta(meta, root, out)
