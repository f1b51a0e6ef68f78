"""The simulator (issue 4): a deterministic discrete-event engine and the resources built on it.

The engine layer (:mod:`.engine`, :mod:`.resources`, :mod:`.rng`), the cost model
(:mod:`.costs`) and the run metrics (:mod:`.metrics`) depend on nothing else in the package;
the models that drive policies and devices through them build on these pieces.
"""

from swiotlb.sim.costs import STEPS, CostConfigError, CostModel
from swiotlb.sim.engine import Callback, Engine, Event
from swiotlb.sim.metrics import Footprint, RunMetrics, Samples, StepGauge
from swiotlb.sim.resources import Cpu, Lock
from swiotlb.sim.rng import RngStreams, derive_seed

__all__ = [
    "STEPS",
    "Callback",
    "CostConfigError",
    "CostModel",
    "Cpu",
    "Engine",
    "Event",
    "Footprint",
    "Lock",
    "RngStreams",
    "RunMetrics",
    "Samples",
    "StepGauge",
    "derive_seed",
]
