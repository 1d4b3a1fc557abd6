"""The relay's process, as the server starts it (see changes/relay_process.py)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from customer_management.changes.relay_process import run
from customer_management.observability.logs import configure_logging

NICENESS = 10
"""The relay is background work: under full load the CPU goes to the calls first, and the
relay takes what they leave (its lag shows whether that is enough)."""


def main() -> None:
    os.nice(NICENESS)
    arguments = json.loads(sys.argv[1])
    configure_logging(arguments["log_level"], arguments["log_format"])
    asyncio.run(run(arguments))


if __name__ == "__main__":
    main()
