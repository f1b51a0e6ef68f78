"""The simulator (issue 4): a deterministic discrete-event engine and the resources built on it.

The engine layer (:mod:`.engine`, :mod:`.resources`, :mod:`.rng`) depends on nothing else in the
package; the models that drive policies and devices through it build on these pieces.
"""

from swiotlb.sim.engine import Callback, Engine, Event
from swiotlb.sim.resources import Cpu, Lock
from swiotlb.sim.rng import RngStreams, derive_seed

__all__ = ["Callback", "Cpu", "Engine", "Event", "Lock", "RngStreams", "derive_seed"]
