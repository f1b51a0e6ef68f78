"""The model against the kernel on real captures: every bounce address and counter.

The full captures live in ../shared/traces/real (skipped without it, with a message); the
excerpts in tests/data/traces are prefixes of them, so that a clone alone still checks every rule.
"""

from __future__ import annotations

import pytest

from swiotlb.traces.canonical import from_text
from swiotlb.traces.fidelity import infer_min_align_masks, replay_fidelity
from swiotlb.traces.meta import load_meta
from tests.conftest import shared_path

NVME, VIRTIO, XHCI = "0000:00:03.0", "0000:00:02.0", "0000:00:04.0"


def _replay(name: str) -> dict:  # type: ignore[type-arg]
    trace = from_text(shared_path("traces", "real", f"{name}.trace.txt.gz"))
    meta = load_meta(shared_path("traces", "real", f"{name}.meta.json"))
    assert meta.pool is not None
    return replay_fidelity(trace, meta.pool, meta=meta).to_json()


@pytest.mark.parametrize("name", ["a_1cpu_default", "e_1cpu_mem512"])
def test_single_cpu_captures_match_every_address_and_hiwater(name: str) -> None:
    j = _replay(name)
    assert j["address_checked"] == j["bounced_maps"] > 100_000
    assert j["address_matches"] == j["address_matches_straight"] == j["address_checked"]
    assert j["mismatches"] == 0 and j["first_mismatch"] is None
    assert j["workload_hiwater_checked"] == 27 and j["workload_hiwater_matches"] == 27
    assert j["hiwater_slots"] == j["kernel_hiwater_slots"]
    assert j["failures"] == {"full": 0, "too_large": 0}
    assert j["min_align_masks"] == {NVME: "0xfff", VIRTIO: "0x0", XHCI: "0x0"}
    assert j["lost_events"] == 0


def test_two_cpu_overflow_capture_explains_every_difference() -> None:
    j = _replay("c_2cpu_small_overflow")
    assert j["address_checked"] == 294_936
    assert j["address_matches_straight"] == 244_989  # 83.07%: one inversion shifts the cursor
    assert j["address_matches"] >= 294_850  # decision by decision: > 99.97%
    assert j["kernel_failed_maps"] == 211 and j["failed_maps_reproduced"] == 211
    assert j["failed_maps_reproduced_straight"] == 210
    assert j["orphan_entries"] == 957 and j["orphan_attempts"] == 53 and j["orphan_attempts_unfailed"] == 0
    assert j["workload_hiwater_matches"] == j["workload_hiwater_checked"] == 27
    assert j["buffer_full_lines_matched"] == j["buffer_full_lines"] == 27
    assert j["unresolved"] == 0
    kinds = j["mismatch_kinds"]
    assert sum(kinds.values()) == j["mismatches"]
    assert "unexplained" not in kinds
    assert kinds["cross_cpu_allocation"] >= 60


def test_mask_inference_needs_evidence() -> None:
    from array import array

    from swiotlb.traces.canonical import COLUMNS, CanonicalTrace, PairingStats

    def trace(pairs: list[tuple[int, int]]) -> CanonicalTrace:
        cols = {c: array("q", [0] * len(pairs)) for c in COLUMNS}
        for i, (phys, dma) in enumerate(pairs):
            cols["phys_addr"][i], cols["dma_addr"][i], cols["bounced"][i] = phys, dma, 1
        names = {"device": ["d"], "kind": ["page"], "dir": ["TO_DEVICE"], "workload": [""]}
        return CanonicalTrace(cols, names, [], {}, PairingStats(), "t", ["d"])

    keeps = [(0x1000 * i + 0x200 * (i % 8), 0x7000_1000 + 0x5000 * (64 - i) + 0x200 * (i % 8)) for i in range(64)]
    assert infer_min_align_masks(trace(keeps)) == {"d": 0xFFF}
    aligned = [(0x1000 * i, 0x7000_1000 + 0x5000 * (64 - i)) for i in range(64)]  # no evidence either way
    assert infer_min_align_masks(trace(aligned)) == {"d": 0}
    slot_start = [(0x1000 * i + 0xF8, 0x7000_0000 + 0x800 * i) for i in range(64)]
    assert infer_min_align_masks(trace(slot_start)) == {"d": 0}


def _excerpt(name: str) -> dict:  # type: ignore[type-arg]
    from tests.conftest import DATA

    trace = from_text(DATA / "traces" / f"{name}.trace.txt.gz")
    meta = load_meta(DATA / "traces" / f"{name}.meta.json")
    assert meta.pool is not None
    return replay_fidelity(trace, meta.pool, meta=meta).to_json()


def test_excerpt_one_cpu_with_nvme_matches_everything() -> None:
    """A prefix of e_1cpu_mem512 through nvme_rr7k5_unal: virtio, xhci and NVMe's 0xfff mask."""
    j = _excerpt("e_1cpu_mem512_to_nvme_rr7k5")
    assert j["min_align_masks"][NVME] == "0xfff"
    assert j["address_checked"] > 70_000
    assert j["address_matches"] == j["address_matches_straight"] == j["address_checked"]
    assert j["workload_hiwater_checked"] >= 13 and j["workload_hiwater_matches"] == j["workload_hiwater_checked"]


def test_excerpt_two_cpus_failures_and_inversions() -> None:
    """A prefix of c_2cpu_small_overflow through vd_sw1m_qd4: a full 2 MiB pool on two CPUs."""
    j = _excerpt("c_2cpu_small_overflow_to_vd_sw1m")
    assert j["address_checked"] > 70_000
    assert j["kernel_failed_maps"] == j["failed_maps_reproduced"] > 100
    assert j["workload_hiwater_checked"] >= 6 and j["workload_hiwater_matches"] == j["workload_hiwater_checked"]
    assert j["address_checked"] - j["address_matches"] == j["mismatches"] < 100  # > 99.8%
    assert j["mismatch_kinds"]["cross_cpu_allocation"] >= 60
    assert j["mismatch_kinds"].get("unexplained", 0) <= 1  # the excerpt cuts off the releases after it
