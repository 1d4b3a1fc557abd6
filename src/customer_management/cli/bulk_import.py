"""`customer-management import FILE`: the bulk load, with a progress bar and a report.

Batches of lines go to worker processes (parsing and validating is CPU work the GIL
would serialise), each writing its own transactions. A line whose reference names a
resource another worker has not stored yet is loaded again at the end, in file order.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from tqdm import tqdm

from customer_management.config import Config
from customer_management.domain.catalog import every_kind
from customer_management.domain.importing import Importer, Report
from customer_management.domain.service import ResourceService
from customer_management.store import migrate
from customer_management.store.database import Database

SHOWN_REJECTS = 100
Batch = list[tuple[int, str]]
_Done = Callable[[Report, int], None]


def importer(config: Config, database: Database, *, defer: bool = False) -> Importer:
    settings = config.settings(config.port)
    kinds = every_kind(config.phone_region, config.card_key.encode())
    return Importer(
        {kind.kind: ResourceService(kind, database, settings) for kind in kinds}, defer=defer
    )


def bulk_import(
    config: Config, path: Path, batch_size: int, *, workers: int = 0, quiet: bool = False
) -> int:
    """Loads `path`; 0 when every line loaded, 1 when some were rejected (listed on stderr)."""
    workers = workers or os.cpu_count() or 1
    database = Database(config.database_url, pool_size=2)
    report = Report()
    started = time.monotonic()
    try:
        migrate.upgrade(database)
        with (
            path.open("rb") as file,
            tqdm(
                total=path.stat().st_size,
                unit="B",
                unit_scale=True,
                desc=f"importing {path.name}",
                disable=quiet,
                file=sys.stderr,
            ) as progress,
        ):

            def done(part: Report, size: int) -> None:
                report.add(part)
                progress.update(size)
                loaded = sum(report.loaded.values())
                progress.set_postfix(loaded=loaded, rejected=len(report.rejected), refresh=False)

            batches = _batches(file, batch_size)
            if workers == 1:
                _load_here(importer(config, database), batches, done)
            else:
                _load_in_workers(config, workers, batches, done)
            if report.deferred:  # every other line is stored now
                later, report.deferred = sorted(report.deferred), []
                _load_here(importer(config, database), _chunks(later, batch_size), done)
        database.analyze()
    finally:
        database.close()
    _print(report, time.monotonic() - started)
    return 1 if report.rejected else 0


def _load_here(loader: Importer, batches: Iterable[tuple[Batch, int]], done: _Done) -> None:
    async def run() -> None:
        for batch, size in batches:
            part = Report()
            await loader.load(batch, part)
            done(part, size)

    asyncio.run(run())


def _load_in_workers(
    config: Config, workers: int, batches: Iterable[tuple[Batch, int]], done: _Done
) -> None:
    context = multiprocessing.get_context("spawn")  # no forked copies of running threads
    with ProcessPoolExecutor(workers, context, _start_worker, (config,)) as pool:
        pending: dict[Future[Report], int] = {}
        for batch, size in batches:
            if len(pending) >= 2 * workers:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    done(future.result(), pending.pop(future))
            pending[pool.submit(_load_in_worker, batch)] = size
        for future in list(pending):
            done(future.result(), pending.pop(future))


_worker: tuple[Importer, asyncio.AbstractEventLoop] | None = None


def _start_worker(config: Config) -> None:
    global _worker
    database = Database(config.database_url, pool_size=2)
    _worker = importer(config, database, defer=True), asyncio.new_event_loop()
    # A batch's objects die by reference counting; the collector would only walk them.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def _load_in_worker(batch: Batch) -> Report:
    assert _worker is not None
    loader, loop = _worker
    part = Report()
    loop.run_until_complete(loader.load(batch, part))
    return part


def _batches(file: Iterable[bytes], size: int) -> Iterator[tuple[Batch, int]]:
    batch: Batch = []
    read = 0
    for number, raw in enumerate(file, start=1):
        read += len(raw)
        text = raw.decode("utf-8", errors="replace").strip()
        if text:
            batch.append((number, text))
        if len(batch) >= size:
            yield batch, read
            batch, read = [], 0
    if batch or read:
        yield batch, read


def _chunks(lines: Batch, size: int) -> Iterator[tuple[Batch, int]]:
    for start in range(0, len(lines), size):
        yield lines[start : start + size], 0


def _print(report: Report, elapsed: float) -> None:
    loaded = sum(report.loaded.values())
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(report.loaded.items()))
    rate = loaded / elapsed if elapsed > 0 else 0.0
    print(
        f"loaded {loaded} resources ({kinds or 'none'}) in {elapsed:.1f} s, {rate:.0f}/s; "
        f"rejected {len(report.rejected)}",
        file=sys.stderr,
    )
    for rejected in report.rejected[:SHOWN_REJECTS]:
        print(f"line {rejected.line}: {rejected.reason}", file=sys.stderr)
    if len(report.rejected) > SHOWN_REJECTS:
        print(f"… and {len(report.rejected) - SHOWN_REJECTS} more", file=sys.stderr)
