"""The mixed load of `make bench`, short: the same clients, watchers and report, on both
databases. No timing is asserted (CI machines are shared); what must hold at any speed
is asserted: no call fails and every acknowledged write reaches every watcher."""

from __future__ import annotations

from pathlib import Path

from benchmarks import load as bench_load
from benchmarks import run as bench


def test_a_short_mixed_load_loses_nothing(own_database: str, tmp_path: Path) -> None:
    run = bench_load.load_run(
        "smoke",
        own_database,
        tmp_path,
        bench.server,
        watchers=10,
        minutes=0.2,
        max_seconds=3,
        share=0.8,
        quiet=True,
    )
    assert run.max_rps > 0 and run.calls > 0
    assert run.errors == {}, run.errors
    assert run.acknowledged_writes > 0
    assert run.delivered_least >= run.acknowledged_writes  # no watcher missed one
    assert run.rss and run.minutes
    text = bench_load.report([run])
    assert "## Mixed load" in text and "| smoke |" in text
