"""Where bounce buffers come from: the :class:`BouncePolicy` interface and its implementations.

``POLICIES`` maps each policy's ``name`` to its class.
"""

from typing import Any

from swiotlb.core import IoTlbMem
from swiotlb.policies.adaptive import AdaptiveKnobs, AdaptivePolicy
from swiotlb.policies.base import BouncePolicy, PolicyDevice
from swiotlb.policies.env import PolicyEnv
from swiotlb.policies.lending import LendingPolicy
from swiotlb.policies.linux66 import Linux66Policy
from swiotlb.policies.rfc_v1 import RfcV1Policy
from swiotlb.policies.static import StaticPolicy

POLICIES: dict[str, type[BouncePolicy]] = {StaticPolicy.name: StaticPolicy}
POLICIES[Linux66Policy.name] = Linux66Policy
POLICIES[AdaptivePolicy.name] = AdaptivePolicy
POLICIES[RfcV1Policy.name] = RfcV1Policy
POLICIES[LendingPolicy.name] = LendingPolicy


def policy_class(name: str) -> type[BouncePolicy]:
    """The class registered as ``name``; the error lists the known names."""
    try:
        return POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise ValueError(f"unknown policy {name!r}; known policies: {known}") from None


def make_policy(name: str, mem: IoTlbMem, env: PolicyEnv, **options: Any) -> BouncePolicy:
    """The policy called ``name`` over ``mem``, drawing memory from ``env``; options are its knobs."""
    cls = policy_class(name)
    try:
        return cls(mem, env, **options)  # type: ignore[call-arg]
    except TypeError as exc:
        raise ValueError(f"policy {name!r}: {exc}") from exc

__all__ = ["AdaptiveKnobs", "AdaptivePolicy", "BouncePolicy", "Linux66Policy", "POLICIES", "PolicyDevice", "PolicyEnv", "RfcV1Policy", "StaticPolicy",
           "make_policy", "policy_class"]
