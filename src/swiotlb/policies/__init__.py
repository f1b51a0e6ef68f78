"""Where bounce buffers come from: the :class:`BouncePolicy` interface and its implementations.

``POLICIES`` maps each policy's ``name`` to its class.
"""

from swiotlb.policies.base import BouncePolicy, PolicyDevice
from swiotlb.policies.static import StaticPolicy

POLICIES: dict[str, type[BouncePolicy]] = {StaticPolicy.name: StaticPolicy}

__all__ = ["BouncePolicy", "POLICIES", "PolicyDevice", "StaticPolicy"]
