"""`customer-management serve | migrate`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from customer_management import config as settings
from customer_management.server import serve
from customer_management.store import migrate
from customer_management.store.database import Database


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="customer-management", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    settings.add_arguments(commands.add_parser("serve", help="run the gRPC service"))
    settings.add_arguments(commands.add_parser("migrate", help="apply the schema migrations"))
    arguments = parser.parse_args(argv)
    config = settings.from_arguments(arguments)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if arguments.command == "migrate":
        database = Database(config.database_url, pool_size=1)
        migrate.upgrade(database)
        logging.getLogger(__name__).info("schema is current on %s", database.display_url)
        database.close()
        return 0
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
