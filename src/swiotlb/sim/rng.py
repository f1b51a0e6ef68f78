"""All randomness of a run, derived from one seed (issue 4, §1).

Each consumer draws from its own named substream, seeded from a hash of the run seed and the
name. Streams are therefore independent of each other and of the order in which they are created:
adding a workload, or drawing more numbers in one, leaves every other stream's draws unchanged,
so comparisons between configurations differ only where the configurations differ.

``random.Random`` rather than numpy: it needs no dependency, its integer seeding and Mersenne
Twister output are stable across Python versions and platforms, and its per-draw cost is lower
than numpy's for the one-number-at-a-time draws an event loop makes.
"""

from __future__ import annotations

import hashlib
import random


def derive_seed(seed: int, name: str) -> int:
    """A 128-bit seed for substream ``name`` of run ``seed``; also usable to seed other processes."""
    if type(seed) is not int:
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    digest = hashlib.sha256(f"swiotlb-sim\0{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:16], "big")


class RngStreams:
    """Named, independent ``random.Random`` substreams of one run seed.

    ``substream(name)`` returns the same generator object every time for the same name, so two
    components that share a name share a sequence; give each consumer its own name, e.g.
    ``"workload/nvme0/arrivals"``.
    """

    def __init__(self, seed: int) -> None:
        derive_seed(seed, "")  # validates the seed
        self.seed = seed
        self._streams: dict[str, random.Random] = {}

    def substream(self, name: str) -> random.Random:
        """The generator for ``name``, created on first use."""
        rng = self._streams.get(name)
        if rng is None:
            rng = self._streams[name] = random.Random(derive_seed(self.seed, name))
        return rng

    def names(self) -> list[str]:
        """Names of the streams created so far, sorted (for logging what a run drew from)."""
        return sorted(self._streams)
