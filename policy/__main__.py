"""The policy pack the engine runs: `pulumi preview --policy-pack policy --policy-pack-config policy/config.<stack>.json`.

Building the PolicyPack starts the analyzer's gRPC server and blocks, so the policies themselves
live in policies.py, where the tests and the offline harness (ops/policy_check.py) import them.
"""

import os
import sys

# The engine starts the pack from policy/; `policy.*` and model/ resolve from the repository root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pulumi_policy import PolicyPack  # noqa: E402

from policy.policies import DEFAULT_LEVEL, PACK_NAME, POLICIES  # noqa: E402

PolicyPack(name=PACK_NAME, policies=POLICIES, enforcement_level=DEFAULT_LEVEL)
