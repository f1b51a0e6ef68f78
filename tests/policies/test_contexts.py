"""Issue 3 §3: no policy does sleeping work for a caller that may not sleep.

Sleeping work is a page allocation that may reclaim (``__GFP_DIRECT_RECLAIM``), a contiguous
allocation (it migrates pages), and a private/shared conversion (it may sleep, spec §5.4). For
every registered policy, a confidential guest with a small pool and a CMA region is driven far
past its pool by callers that may not sleep, while every such call is recorded; none may happen
inside an atomic map or unmap. Then the same traffic from sleeping callers shows the recorder
does see sleeping work when it is allowed.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from swiotlb import DmaDirection, DmaMappingError, Machine
from swiotlb.memory import may_sleep
from swiotlb.policies import POLICIES

TO = DmaDirection.TO_DEVICE


class Recorder:
    def __init__(self) -> None:
        self.atomic = False
        self.violations: list[str] = []
        self.sleeping_calls = 0

    def wrap(self, obj: Any, name: str, sleeps: Callable[..., bool]) -> None:
        inner = getattr(obj, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if sleeps(*args, **kwargs):
                self.sleeping_calls += 1
                if self.atomic:
                    self.violations.append(f"{name}{args}{kwargs}")
            return inner(*args, **kwargs)

        setattr(obj, name, call)


CMA = (1 << 30, 256 << 20)
OPTIONS: dict[str, dict[str, int]] = {"lending": {"region_start": CMA[0], "region_bytes": CMA[1]}}


def _machine(policy: str) -> tuple[Machine, Recorder]:
    m = Machine("8G", cpus=2, coco=True, cmdline="swiotlb=512", policy=policy, cma=[CMA],
                policy_options=OPTIONS.get(policy))
    rec = Recorder()
    pages, enc = m.pages, m.encryption
    rec.wrap(pages, "alloc_pages", lambda order, gfp=0, **kw: may_sleep(gfp))
    rec.wrap(pages, "alloc_contig", lambda *a, **kw: True)
    rec.wrap(pages, "free_contig", lambda *a, **kw: False)
    rec.wrap(enc, "set_decrypted", lambda *a, **kw: True)
    rec.wrap(enc, "set_encrypted", lambda *a, **kw: True)
    return m, rec


def _traffic(m: Machine, rec: Recorder, *, sleeping: bool) -> int:
    dev = m.add_device(f"dev-{sleeping}")
    bufs = [m.alloc(256 << 10) for _ in range(40)]
    live = []
    mapped = 0
    for i, buf in enumerate(bufs):
        size = (256 << 10, 64 << 10, 4096, 9000)[i % 4]
        rec.atomic = not sleeping
        try:
            live.append((dev.map_single(buf, size, TO, may_sleep=sleeping), size))
            mapped += 1
        except DmaMappingError:
            pass
        finally:
            rec.atomic = False
    for dma, size in live:
        rec.atomic = not sleeping
        try:
            dev.unmap(dma, size, TO)
        finally:
            rec.atomic = False
    return mapped


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_atomic_callers_never_trigger_sleeping_work(policy: str) -> None:
    m, rec = _machine(policy)
    mapped = _traffic(m, rec, sleeping=False)
    assert rec.violations == [], f"{policy} slept for an atomic caller: {rec.violations[:3]}"
    assert mapped > 0
    m.run_deferred()  # process context: the deferred work may sleep here, and must not fail


def test_the_recorder_sees_sleeping_work_when_it_is_allowed() -> None:
    m, rec = _machine("adaptive")
    before = rec.sleeping_calls
    _traffic(m, rec, sleeping=True)
    assert rec.sleeping_calls > before and rec.violations == []
