"""``python -m lane_mp``: the command line (see ``lane_mp/cli.py``)."""

from .cli import main

main()
