"""Cloud-side actions of the devcloud, run with the venv's python:

    cloudctl.py PARAMS_JSON ACTION [ACTION ...]

Actions: seed-keystone, seed-nova, smoke, health. Several actions share one
process (imports of the OpenStack clients cost about a second). Progress goes
to stderr; one JSON object merging every action's result goes to stdout.
Exit status is non-zero on any failure.
"""

import json
import os
import sys
import traceback
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def health(params: Dict[str, Any]) -> Dict[str, Any]:
    """Cheap warm-start check: tokens work and nova-compute is up."""
    import nova_seed
    nova_seed.wait_compute_up(params, timeout=0)
    return {}


def main(argv: List[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as handle:
        params = json.load(handle)
    import keystone_seed
    import nova_seed
    import smoke
    actions = {"seed-keystone": keystone_seed.run, "seed-nova": nova_seed.run,
               "smoke": smoke.run, "health": health}
    result: Dict[str, Any] = {}
    for name in argv[2:]:
        if name not in actions:
            print(f"unknown action {name}", file=sys.stderr)
            return 2
        try:
            outcome = actions[name](params) or {}
        except Exception as error:  # report, then fail the whole call
            traceback.print_exc()
            print(f"cloudctl: {name} failed: {error}", file=sys.stderr)
            print(json.dumps(result))
            return 1
        result.update(outcome)
        params.update(outcome)  # e.g. smoke needs the image id found by seed-nova
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
