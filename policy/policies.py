"""The pack's policies, in the order it serves them: one module per area registers its rules (policy/registry.py).

Kept apart from `__main__.py` because building a `PolicyPack` starts the analyzer server and
blocks; the tests and `ops/policy_check.py` import `POLICIES` from here and drive the SDK's own
analyzer with them. A new rule goes in its area's module, registered where it is defined; a new
area is one import line below.
"""

from __future__ import annotations

# The areas, imported for the policies they register; their order is the pack's order.
from policy import access, data, monitoring, network, capacity, domains, firewall, replacement  # noqa: F401
from policy.registry import DEFAULT_LEVEL, PACK_NAME, registered

POLICIES = registered()

__all__ = ["DEFAULT_LEVEL", "PACK_NAME", "POLICIES"]
