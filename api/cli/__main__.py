"""`python -m api.cli`: the `relayflow` command."""
from api.cli import main

main()
