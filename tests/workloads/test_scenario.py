"""Scenario files: units, every key type, and errors that name the file, key path and need."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from swiotlb.workloads.scenario import ScenarioError, ScenarioSpec, find_scenario, load_scenario, parse_text
from swiotlb.workloads.units import (
    format_duration,
    format_size,
    parse_bandwidth,
    parse_bytes,
    parse_duration,
)

REPO = Path(__file__).resolve().parents[2]

BASE = """
name = "t"
duration = "1s"

[machine]
ram = "8G"

[[device]]
name = "d0"
latency = "10us"

[[workload]]
kind = "fio"
name = "j1"
device = "d0"

[[workload]]
kind = "fio"
name = "j2"
device = "d0"

[[workload]]
kind = "fio"
name = "j3"
device = "d0"
"""


def parse(extra: str = "", *, base: str = BASE, before: str = "") -> ScenarioSpec:
    """BASE with ``extra`` appended to the last workload and ``before`` prepended."""
    return parse_text(before + base + extra, "t.toml")


def error(extra: str = "", *, base: str = BASE, before: str = "") -> str:
    with pytest.raises(ScenarioError) as info:
        parse(extra, base=base, before=before)
    message = str(info.value)
    assert message.startswith("t.toml: "), message
    return message


# -- units ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "ns"),
    [("500ns", 500), ("2us", 2000), ("2µs", 2000), ("2μs", 2000), ("10ms", 10_000_000),
     ("30s", 30 * 10**9), ("10min", 600 * 10**9), ("1h", 3600 * 10**9), ("1.5s", 1_500_000_000),
     ("0.25ms", 250_000), ("10 ms", 10_000_000), (1234, 1234), (0, 0)],
)
def test_parse_duration(text: object, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("bad", ["1.5ns", "0.0001us", "10", "10m", "-1s", -5, 1.5, True, "1e3s", "s"])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("ns", [0, 1, 999, 1000, 1500, 10**6, 123_456_789, 90 * 10**9, 5400 * 10**9,
                                25 * 3600 * 10**9, 7 * 10**9 + 1])
def test_duration_round_trip(ns: int) -> None:
    assert parse_duration(format_duration(ns)) == ns


def test_format_duration_is_short() -> None:
    assert [format_duration(v) for v in (1_500_000_000, 600 * 10**9, 3600 * 10**9, 250_000)] == [
        "1.5s", "10min", "1h", "250us"]


def test_sizes() -> None:
    assert parse_bytes("4K") == 4096
    assert parse_bytes("16GiB") == 16 << 30
    assert parse_bytes("0x1000") == 4096
    assert parse_bytes("1.5M") == 3 << 19
    assert parse_bandwidth("4G/s") == parse_bandwidth("4G") == 4 << 30
    for bad in ("1.0000001K", "4X", -1, 2.5, True):
        with pytest.raises(ValueError):
            parse_bytes(bad)
    for n in (0, 1, 4096, 8294400, 64 << 20, 3 << 30):
        assert parse_bytes(format_size(n)) == n


# -- parsing every key type --------------------------------------------------------------------
def test_defaults_and_types() -> None:
    spec = parse()
    assert spec.id is None and spec.name == "t" and spec.title == "t" and spec.checks == ""
    assert spec.duration_ns == 10**9 and spec.seed == 1
    assert spec.machine.ram == 8 << 30
    assert spec.devices[0].latency_ns == 10_000
    assert [w.name for w in spec.workloads] == ["j1", "j2", "j3"]
    assert spec.policies  # every registered policy
    assert spec.source == "t.toml" and spec.ref == "t"


def test_key_types() -> None:
    spec = parse(
        'bs = [["4K", 3], [131072, 1]]\niodepth = 32\nrw = "randrw"\nrwmixread = 70\nmay_sleep = true\n'
        'think = "1.5ms"\nstop_ns = 900000000\ncpu = 3\n',
        before='id = "X1"\nseed = 9\n',
    )
    j3 = spec.workloads[2]
    assert j3.bs == ((4096, 3), (131072, 1))  # type: ignore[attr-defined]
    assert j3.iodepth == 32 and j3.rw == "randrw" and j3.may_sleep is True  # type: ignore[attr-defined]
    assert j3.think_ns == 1_500_000 and j3.stop_ns == 900_000_000 and j3.cpu == 3  # type: ignore[attr-defined]
    assert spec.id == "X1" and spec.seed == 9


def test_single_size_and_other_kinds() -> None:
    extra = """
[[workload]]
kind = "poisson"
name = "p"
device = "d0"
rate_per_s = 6
bs = "4K"
hold = "50us"

[[workload]]
kind = "frames"
name = "f"
device = "d0"
size = 8294400
fps = 30

[[workload]]
kind = "background"
name = "bg"
ramp = [["0s", "0"], ["500ms", "1G"]]
order_mix = [[0, 0.5], [9, 0.5]]
"""
    spec = parse(extra)
    p, f, bg = spec.workloads[3:]
    assert p.bs == ((4096, 1),) and p.rate_per_s == 6.0 and p.hold_ns == 50_000  # type: ignore[attr-defined]
    assert f.size == ((8294400, 1),) and f.fps == 30.0  # type: ignore[attr-defined]
    assert bg.ramp == ((0, 0), (500_000_000, 1 << 30))  # type: ignore[attr-defined]
    assert bg.order_mix == ((0, 0.5), (9, 0.5))  # type: ignore[attr-defined]


def test_machine_device_policy_costs() -> None:
    text = BASE.replace('ram = "8G"', 'ram = "2G"\ncpus = 4\narch = "arm64"\npage_size = "64K"\n'
                        'zone_dma_bits = 30\ncma = [["256M", "256M"]]\ncmdline = "swiotlb=force"')
    text = text.replace('latency = "10us"', 'latency_ns = 5000\nmin_align_mask = 0xFFF\n'
                        'seg_boundary_mask = "0xFFFF"\nbandwidth = "400M/s"\ndma_bits = 32\n'
                        'latency_jitter = "1.5us"')
    after = ('[policy.adaptive]\ninitial_slabs = 1024\nidle = "5s"\n'
              'high_watermark = 1\n[costs]\ncopy_bytes_per_us = 5000\nconversion_call = "30us"\n')
    spec = parse_text('policies = ["static", "adaptive"]\n' + text + after, "t.toml")
    m, d = spec.machine, spec.devices[0]
    assert (m.ram, m.cpus, m.arch, m.page_size, m.zone_dma_bits) == (2 << 30, 4, "arm64", 65536, 30)
    assert m.cma == ((256 << 20, 256 << 20),) and m.cmdline == "swiotlb=force"
    assert (d.latency_ns, d.min_align_mask, d.seg_boundary_mask, d.bandwidth, d.dma_bits, d.latency_jitter_ns) == (
        5000, 0xFFF, 0xFFFF, 400 << 20, 32, 1500)
    assert spec.policies == ("static", "adaptive")
    assert dict(spec.policy_options["adaptive"]) == {"initial_slabs": 1024, "idle_ns": 5 * 10**9,
                                                      "high_watermark": 1.0}
    assert isinstance(spec.policy_options["adaptive"]["high_watermark"], float)
    assert dict(spec.costs) == {"copy_bytes_per_us": 5000, "conversion_call_ns": 30_000}


def test_with_overrides() -> None:
    spec = parse()
    other = spec.with_overrides(duration_ns=5 * 10**9, seed=4)
    assert (other.duration_ns, other.seed) == (5 * 10**9, 4)
    assert (spec.duration_ns, spec.seed) == (10**9, 1)
    assert spec.with_overrides() == spec
    with pytest.raises(ScenarioError, match="duration"):
        spec.with_overrides(duration_ns=0)


# -- errors: file, key path, expectation --------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "before", "pattern"),
    [
        ('iodepth = "4"\n', "", r"workload\[2\] \(fio 'j3'\)\.iodepth: expected an integer, got '4'"),
        ("depth = 4\n", "", r"workload\[2\] \(fio 'j3'\)\.depth: unknown key; valid keys: .*iodepth"),
        ('think = "1ms"\nthink_ns = 5\n', "", r"\.think_ns: 'think_ns' is already given as 'think'"),
        ('think = "1.5ns"\n', "", r"\.think: '1.5ns' is not a whole number of nanoseconds"),
        ('think = "5 parsecs"\n', "", r"\.think: expected a duration .*got '5 parsecs'"),
        ('bs = [["4K", "x"]]\n', "", r"\.bs\[0\]\[1\]: expected an integer, got 'x'"),
        ("bs = [4096]\n", "", r"\.bs\[0\]: expected a pair"),
        ("may_sleep = 1\n", "", r"\.may_sleep: expected true or false, got 1"),
        ('rw = "sideways"\n', "", r"workload\[2\] \(fio 'j3'\)\.rw: .*sideways"),
        ("iodepth = 0\n", "", r"workload\[2\] \(fio 'j3'\)\.iodepth: .*iodepth"),
        ('start = "2s"\n', "", r"\.start: 2s is not before the end of the run \(1s\)"),
        ("", 'foo = 1\n', r"t\.toml: foo: unknown key; valid top-level keys"),
        ("", 'policies = ["static", "foo"]\n', r"policies\[1\]: unknown policy 'foo'; known policies: .*static"),
        ('[policy.nope]\nx = 1\n', "", r"policy\.nope: unknown policy 'nope'"),
        ('[policy.adaptive]\nfoo = 1\n', "", r"policy\.adaptive\.foo: policy 'adaptive' has no such knob; knobs: .*idle_ns"),
        ('[policy.adaptive]\ntransient = 1\n', "", r"policy\.adaptive\.transient: expected true or false"),
        ('[policy.adaptive]\nhigh_watermark = 2.0\n', "", r"policy\.adaptive\.high_watermark: .*\(0, 1\]"),
        ('[costs]\nfoo_ns = 1\n', "", r"costs\.foo_ns: unknown cost key 'foo_ns'"),
        ('[costs]\nslot_probe_ns = -1\n', "", r"costs\.slot_probe_ns: .*>= 0"),
        ("", 'seed = "x"\n', r"seed: expected an integer, got 'x'"),
        ("", 'name = "a b"\n', r"name: expected letters"),
    ],
)
def test_errors(extra: str, before: str, pattern: str) -> None:
    base = BASE
    if before.startswith("name ="):
        base = BASE.replace('name = "t"\n', "", 1)
    assert re.search(pattern, error(extra, before=before, base=base))


def test_error_machine_and_device() -> None:
    assert "t.toml: machine.cpus: " in error(base=BASE.replace('ram = "8G"', 'ram = "8G"\ncpus = 0'))
    assert "machine.ram: expected a size" in error(base=BASE.replace('ram = "8G"', 'ram = "8X"'))
    msg = error(base=BASE.replace('latency = "10us"', "latency = 10.5"))
    assert "device[0] ('d0').latency: expected a duration" in msg
    msg = error(base=BASE.replace('latency = "10us"', "dma_bits = 70"))
    assert "device[0] ('d0').dma_bits: " in msg
    msg = error(base=BASE.replace('[[workload]]', '[[device]]\nname = "d0"\n[[workload]]', 1))
    assert "device[1] ('d0').name: device name 'd0' is used twice" in msg
    assert "machine: missing" in error(base='name = "x"\nduration = "1s"\n')
    assert "duration: missing" in error(base=BASE.replace('duration = "1s"\n', ""))


def test_error_workload_references() -> None:
    msg = error(base=BASE.replace('name = "j3"\ndevice = "d0"', 'name = "j3"\ndevice = "sdb"'))
    assert "workload[2] (fio 'j3').device: no device 'sdb'; devices: d0" in msg
    msg = error(base=BASE.replace('kind = "fio"\nname = "j3"', 'kind = "dd"\nname = "j3"'))
    assert "workload[2].kind: unknown workload kind 'dd'; known kinds: " in msg and "fio" in msg
    msg = error(base=BASE.replace('name = "j3"', 'name = "j1"'))
    assert "workload[2] (fio 'j1').name: workload name 'j1' is used twice" in msg
    msg = error(base=BASE.replace('name = "j3"\ndevice = "d0"', 'name = "j3"'))
    assert "workload[2] (fio 'j3').device: missing; expected a string" in msg
    msg = error(base=BASE.replace('kind = "fio"\nname = "j3"', 'name = "j3"'))
    assert "workload[2].kind: missing" in msg


def test_noforce_refused_with_dynamic_policies() -> None:
    msg = error(base=BASE.replace('ram = "8G"', 'ram = "8G"\ncmdline = "swiotlb=noforce"'))
    assert "noforce" in msg and "policies[" in msg
    parse(before='policies = ["static"]\n', base=BASE.replace('ram = "8G"', 'ram = "8G"\ncmdline = "swiotlb=noforce"'))


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BASE + "iodepth = \n", encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value).startswith(f"{path}: not valid TOML") and "line 26" in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ScenarioError, match=r"nope\.toml: cannot read the file"):
        find_scenario("nope.toml")


def test_find_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(BASE, encoding="utf-8")
    spec = find_scenario(str(path))
    assert spec.name == "t" and spec.source == str(path)


def test_unknown_ref_lists_builtins() -> None:
    with pytest.raises(ScenarioError) as info:
        find_scenario("S99")
    assert "S1 (coco-storage)" in str(info.value) and "S14" in str(info.value)


def test_docs_example_parses() -> None:
    text = (REPO / "docs" / "scenarios.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert blocks, "docs/scenarios.md has a full example"
    spec = parse_text(blocks[-1], "docs/scenarios.md")
    assert spec.name == "my-coco-disk" and spec.costs["conversion_call_ns"] == 30_000
