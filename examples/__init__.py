"""Package data, not code: the example workflows (`*.yaml`, with their `demo_inputs`).

`relayflow up --demo` runs every file directly in this folder, found with `importlib.resources`
in a checkout and in an installed wheel alike; `relayflow run examples/<file>.yaml` reads one
from a checkout. Nothing here is imported for its code.
"""
