"""A network interface's DMA: long-lived RX rings plus short TX maps, none of which may sleep.

This is the load that cannot be throttled (S14's virtio-net, Tianyu Lan's 20 -> 34 Gb/s
network numbers behind the areas patch, S11): RX buffers are mapped when posted and stay
mapped until a packet lands in them, so a NIC holds ``queues x rx_ring`` buffers of the pool at
all times, and every packet is an unmap plus a refill map in atomic (NAPI) context. A refill
that fails leaves the ring one buffer short, as drivers do, and is retried at the ring's next
packet; a ring with no buffer left drops the packet.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

from swiotlb.dma.types import DmaDirection
from swiotlb.workloads.base import Checker, SimLike, draws, poisson_arrivals, stop_of


@dataclass(frozen=True)
class Net:
    """``queues`` RX/TX queue pairs on ``device`` (S14, Tianyu's network, S11).

    At ``start_ns`` each RX ring (CPU ``queue % cpus``) maps ``rx_ring`` buffers of ``rx_buf``
    bytes FROM_DEVICE. Packets arrive at ``rx_pps`` in total (Poisson), each on a seeded random
    queue (RSS): the oldest posted buffer is unmapped and the ring refilled. TX sends bursts of
    ``tx_burst`` frames of ``tx_frame`` bytes at ``tx_pps / tx_burst`` bursts per second on a
    random queue, each frame unmapped after ``service_ns(tx_frame)``. Counts
    ``{name}/rx_refill_failed``, ``{name}/tx_dropped`` and ``{name}/rx_dropped`` (a packet
    that found its ring empty). Rings stay posted after ``stop_ns`` (the interface stays up).
    """

    kind: ClassVar[str] = "net"

    name: str
    device: str
    rx_ring: int = 256
    rx_buf: int = 2048
    rx_pps: float = 0.0
    tx_pps: float = 0.0
    tx_frame: int = 1500
    tx_burst: int = 1
    queues: int = 1
    start_ns: int = 0
    stop_ns: int | None = None

    def __post_init__(self) -> None:
        c = Checker(self.kind, self.name)
        c.str_("device", self.device)
        c.int_("rx_ring", self.rx_ring)
        c.int_("rx_buf", self.rx_buf, 1)
        object.__setattr__(self, "rx_pps", c.float_("rx_pps", self.rx_pps))
        object.__setattr__(self, "tx_pps", c.float_("tx_pps", self.tx_pps))
        if self.rx_pps > 0 and self.rx_ring == 0:
            raise c.fail("rx_ring", ">= 1 when rx_pps > 0", self.rx_ring)
        c.int_("tx_frame", self.tx_frame, 1)
        c.int_("tx_burst", self.tx_burst, 1)
        c.int_("queues", self.queues, 1)
        c.span(self.start_ns, self.stop_ns)

    def start(self, sim: SimLike) -> None:
        dev = sim.device(self.device)
        stop = stop_of(self.stop_ns, sim)
        if self.start_ns >= stop:
            return
        engine = sim.engine
        at, map_, unmap, count = engine.at, sim.map, sim.unmap, sim.count
        name, nq = self.name, self.queues
        qcpu = [q % sim.cpus for q in range(nq)]
        rings: list[deque[Any]] = [deque() for _ in range(nq)]
        short = [self.rx_ring] * nq  # buffers each ring is missing
        dev_name, rx_buf, tx_frame, tx_burst = self.device, self.rx_buf, self.tx_frame, self.tx_burst
        tx_svc, spread = dev.service_ns(tx_frame), dev.latency_jitter_ns
        jitter = sim.rng(f"{name}/jitter").randint
        rx_dir, tx_dir = DmaDirection.FROM_DEVICE, DmaDirection.TO_DEVICE
        refill_key, rx_drop_key, tx_drop_key = f"{name}/rx_refill_failed", f"{name}/rx_dropped", f"{name}/tx_dropped"

        def refill(q: int) -> None:
            """Post the ring's missing buffers until one map fails (then stop, as drivers do)."""
            ring, cpu, need = rings[q], qcpu[q], short[q]
            while need:
                m = map_(dev_name, rx_buf, rx_dir, cpu=cpu)
                if m is None:
                    count(refill_key)
                    break
                ring.append(m)
                need -= 1
            short[q] = need

        def post_all() -> None:
            for q in range(nq):
                refill(q)

        at(self.start_ns, post_all)

        if self.rx_pps > 0:
            rxq = draws(sim.rng(f"{name}/rx_queue"), range(nq))

            def on_rx() -> None:
                q = next(rxq)
                ring = rings[q]
                if ring:
                    unmap(ring.popleft())
                    short[q] += 1
                else:
                    count(rx_drop_key)
                refill(q)

            engine.add_source(
                poisson_arrivals(sim.rng(f"{name}/rx"), on_rx, self.rx_pps, self.start_ns, stop), f"{name}/rx"
            )

        if self.tx_pps > 0:
            txq = draws(sim.rng(f"{name}/tx_queue"), range(nq))

            def on_tx() -> None:
                cpu = qcpu[next(txq)]
                for _ in range(tx_burst):
                    m = map_(dev_name, tx_frame, tx_dir, cpu=cpu)
                    if m is None:
                        count(tx_drop_key)
                    else:
                        at(m.ready_ns + tx_svc + (jitter(0, spread) if spread else 0), functools.partial(unmap, m))

            engine.add_source(
                poisson_arrivals(sim.rng(f"{name}/tx"), on_tx, self.tx_pps / tx_burst, self.start_ns, stop),
                f"{name}/tx",
            )
