"""The policy pack the engine runs: `pulumi preview --policy-pack policy --policy-pack-config policy/config.<stack>.json`.

Building the PolicyPack starts the analyzer's gRPC server and blocks, so the policies themselves
live in the area modules policy/policies.py gathers, where the tests and the offline harness
(ops/policy_check.py) import them.
"""

import os
import sys

# The engine starts the pack as `python __main__.py` in policy/, which puts policy/ first on
# sys.path: `policy.*`, model/ and render/ would not resolve, and the area modules (data, network,
# …) would shadow any top-level module of the same name. This is the one place the path is set:
# every other module of the pack imports as `policy.*` from the repository root.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(_HERE)] + [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

from pulumi_policy import PolicyPack  # noqa: E402

from policy.policies import DEFAULT_LEVEL, PACK_NAME, POLICIES  # noqa: E402

PolicyPack(name=PACK_NAME, policies=POLICIES, enforcement_level=DEFAULT_LEVEL)
