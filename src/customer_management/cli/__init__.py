"""`customer-management serve | migrate | import FILE`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from customer_management import config as settings
from customer_management.cli.bulk_import import bulk_import
from customer_management.observability.logs import configure_logging
from customer_management.server import serve
from customer_management.store import migrate
from customer_management.store.database import Database


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="customer-management", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    settings.add_arguments(commands.add_parser("serve", help="run the gRPC service"))
    settings.add_arguments(commands.add_parser("migrate", help="apply the schema migrations"))
    loader = commands.add_parser(
        "import",
        help="load TMF JSON lines (Customer, CustomerAccount, PaymentMean, CreditCategory)",
    )
    loader.add_argument("file", type=Path, help="one JSON resource per line, with its @type")
    loader.add_argument("--batch-size", type=int, default=1000, help="lines per transaction")
    loader.add_argument(
        "--workers", type=int, default=0, help="processes loading batches (default: one per CPU)"
    )
    loader.add_argument("--quiet", action="store_true", help="no progress bar")
    settings.add_arguments(loader)
    arguments = parser.parse_args(argv)
    config = settings.from_arguments(arguments)
    configure_logging(config.log_level, config.log_format)
    if arguments.command == "migrate":
        database = Database(config.database_url, pool_size=1)
        migrate.upgrade(database)
        logging.getLogger(__name__).info("schema is current on %s", database.display_url)
        database.close()
        return 0
    if arguments.command == "import":
        return bulk_import(
            config,
            arguments.file,
            arguments.batch_size,
            workers=arguments.workers,
            quiet=arguments.quiet,
        )
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
