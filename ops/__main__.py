"""`python -m ops <command>`: the commands for people, one entry point (plan, drift, restore-drill, docs).

The lab of throw-away hosts has its own: `python -m lab` (lab/__main__.py).
"""

from __future__ import annotations

import importlib
import sys

# command -> module whose main(argv) runs it; each module also runs on its own (`python -m ops.plan`).
COMMANDS = {
    "plan": "ops.plan",
    "drift": "ops.drift",
    "restore-drill": "ops.restore_drill",
    "docs": "ops.docs",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m ops {{{','.join(COMMANDS)}}} [options]; `python -m ops <command> --help` for each", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]])
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
