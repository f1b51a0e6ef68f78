"""Run a scenario under one policy: the step shared by ``swiotlb run``, ``compare`` and the benchmarks.

A :class:`~swiotlb.workloads.scenario.ScenarioSpec` is data; :func:`build_simulation` turns it into a
:class:`~swiotlb.sim.simulation.Simulation` (the machine, the devices, the policy with the
scenario's knobs for it, the cost model with the scenario's overrides, the workloads) and
:func:`run_scenario` runs it and returns the result record.
"""

from __future__ import annotations

from typing import Any

from swiotlb.policies import POLICIES
from swiotlb.sim.costs import CostModel
from swiotlb.sim.simulation import Simulation
from swiotlb.workloads.scenario import ScenarioError, ScenarioSpec


def check_policy(spec: ScenarioSpec, policy: str) -> str:
    """``policy`` if it is registered, else a ScenarioError listing the known ones."""
    if policy not in POLICIES:
        raise ScenarioError(spec.source, "policy", f"unknown policy {policy!r}; known: {', '.join(sorted(POLICIES))}")
    return policy


def build_simulation(spec: ScenarioSpec, policy: str, *, seed: int | None = None,
                     duration_ns: int | None = None, occupancy_bins: int = 0) -> Simulation:
    """The simulation of ``spec`` under ``policy`` (the scenario's seed and duration unless given;
    ``occupancy_bins`` as :class:`~swiotlb.sim.simulation.Simulation` takes it)."""
    check_policy(spec, policy)
    spec = spec.with_overrides(duration_ns=duration_ns, seed=seed)
    sim = Simulation(
        spec.machine, spec.devices, policy=policy, policy_options=dict(spec.policy_options.get(policy, {})),
        seed=spec.seed, duration_ns=spec.duration_ns,
        costs=CostModel.from_mapping(spec.costs, f"{spec.source} [costs]"), scenario=spec.ref,
        occupancy_bins=occupancy_bins,
    )
    for w in spec.workloads:
        sim.add(w)
    return sim


def run_scenario(spec: ScenarioSpec, policy: str, *, seed: int | None = None,
                 duration_ns: int | None = None, occupancy_bins: int = 0) -> dict[str, Any]:
    """Run ``spec`` under ``policy``; the result record of :meth:`Simulation.result`."""
    return build_simulation(spec, policy, seed=seed, duration_ns=duration_ns, occupancy_bins=occupancy_bins).run()
