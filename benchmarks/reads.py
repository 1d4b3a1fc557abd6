"""`make bench`, reads phase: GetCustomer at three cache hit ratios, and UpdateCustomer.

On a database of its own holding `rows` customers (loaded with `customer-management
import`), in interleaved rounds with Health/Check on the same server:

- Gets whose ids follow a Zipf(1.1) distribution over every customer (a few are hot, most
  are read now and then), with the default cache;
- Gets spread uniformly over ten times what the cache holds (most miss), against the
  same load on a server with no cache at all: the misses must cost nothing extra;
- Updates that change two fields, each with its resource's etag (one update per
  customer and round), so none is refused as stale.

The one-hot-id Get is the main phase's (h2load sends one body). The load generator is
benchmarks/grpcload.c (a body per request).
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import random
import statistics
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from tqdm import tqdm

from benchmarks import grpcload
from benchmarks.grpcload import Load
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.customer_pb2 import Customer

ZIPF_S = 1.1
CACHE_ENTRY_BYTES = 1100
"""What the bench's customer costs the cache (its wire form and the entry's overhead)."""
SMALL_CACHE_ENTRIES = 10_000
"""The small cache of the uniform case: the customers are ten times as many."""
GET_TARGETS = {"sqlite": 0.8, "postgresql": 0.7}
UPDATE_TARGETS = {"sqlite": 0.3, "postgresql": 0.2}
UNIFORM_TARGET = UNIFORM = 0.95
"""Uniform Gets with the small cache over the same without any cache: no slower."""
CHECK = "grpc.health.v1.Health/Check"
SERVICE = "tmf629.v1.CustomerManagementService/"

Serve = Callable[..., AbstractContextManager[tuple[str, Any]]]


def customer_id(i: int) -> str:
    return f"00000000-0000-4000-b000-{i:012d}"


@dataclass
class ReadRun:
    database: str
    rows: int
    rounds: list[dict[str, float]] = field(default_factory=list)
    """Per round: req/s of check, zipf, uniform_cached, uniform_uncached, update."""
    hit_ratio: dict[str, float] = field(default_factory=dict)
    p99_ms: dict[str, float] = field(default_factory=dict)
    errors: int = 0

    def median(self, name: str) -> float:
        return float(statistics.median(r[name] for r in self.rounds))

    def ratio(self, name: str, to: str = "check") -> float:
        return float(statistics.median(r[name] / r[to] for r in self.rounds))


def met(run: ReadRun) -> bool:
    return (
        run.errors == 0
        and run.ratio("zipf") >= GET_TARGETS[run.database]
        and run.ratio("uniform_cached", "uniform_uncached") >= UNIFORM_TARGET
        and run.ratio("update") >= UPDATE_TARGETS[run.database]
    )


def write_customers(path: Path, rows: int) -> Path:
    """`rows` copies of the bench's customer, each with its own id and name, as TMF JSON
    lines for the bulk import."""
    from benchmarks.run import CUSTOMER

    with path.open("w") as out:
        for i in tqdm(range(rows), desc=f"generating {rows} customers", unit="row"):
            out.write(
                json.dumps({**CUSTOMER, "@type": "Customer", "id": customer_id(i), "name": f"C{i}"})
                + "\n"
            )
    return path


def zipf(rows: int, count: int, rng: random.Random) -> list[int]:
    """`count` ranks in [0, rows) drawn from Zipf(ZIPF_S) by inverse transform."""
    weights = list(itertools.accumulate(1 / (k + 1) ** ZIPF_S for k in range(rows)))
    total = weights[-1]
    return [bisect.bisect_left(weights, rng.random() * total) for _ in range(count)]


def read_run(
    name: str,
    url: str,
    workdir: Path,
    serve: Serve,
    load_database: Callable[[str, Path], None],
    *,
    rows: int,
    rounds: int,
    requests: int,
) -> ReadRun:
    """The phase on the database at `url`, filled by `load_database(url, file)`."""
    from benchmarks.run import free_port

    binary = grpcload.build(workdir)
    rng = random.Random(629)
    load_database(url, write_customers(workdir / f"customers-{name}.jsonl", rows))
    bodies = workdir / f"reads-{name}"
    bodies.mkdir(exist_ok=True)
    check = grpcload.write_bodies(bodies / "check.bin", [pb.GetCustomerRequest()])
    zipf_ids = [customer_id(i) for i in zipf(rows, requests, rng)]
    uniform_ids = [customer_id(rng.randrange(rows)) for _ in range(requests)]
    gets = {
        "zipf": grpcload.write_bodies(
            bodies / "zipf.bin", (pb.GetCustomerRequest(id=id) for id in zipf_ids)
        ),
        "uniform": grpcload.write_bodies(
            bodies / "uniform.bin", (pb.GetCustomerRequest(id=id) for id in uniform_ids)
        ),
    }
    # Each round updates customers of its own, once each: their etag is "1".
    per_round = min(requests // 2, rows // rounds)
    updates = [
        grpcload.write_bodies(
            bodies / f"update-{r}.bin",
            (update(customer_id(r * per_round + i)) for i in range(per_round)),
        )
        for r in range(rounds)
    ]
    run = ReadRun(name, rows)
    small = SMALL_CACHE_ENTRIES * CACHE_ENTRY_BYTES / 2**20
    ports = {role: free_port() for role in ("default", "small", "none")}
    with contextlib.ExitStack() as servers:
        targets = {
            role: servers.enter_context(
                serve(url, workdir, "--metrics-port", str(ports[role]), *options)
            )[0]
            for role, options in (
                ("default", ()),
                ("small", ("--cache-mb", f"{small:.2f}")),
                ("none", ("--cache-mb", "0")),
            )
        }

        hits: dict[str, float] = {}

        def load(role: str, method: str, body: Path, count: int = requests) -> Load:
            before = grpcload.scrape(ports[role])
            done = grpcload.run(binary, targets[role], method, body, requests=count)
            hits[role] = _hit_ratio(before, grpcload.scrape(ports[role]))
            run.errors += done.requests - done.ok
            return done

        # A cache is measured warm: one pass of each load first, not counted.
        print(f"[{name}] reads: warming the caches …", flush=True)
        load("default", SERVICE + "GetCustomer", gets["zipf"])
        load("small", SERVICE + "GetCustomer", gets["uniform"])
        for r in range(1, rounds + 1):
            measured = {"check": load("default", CHECK, check)}
            measured["zipf"] = load("default", SERVICE + "GetCustomer", gets["zipf"])
            run.hit_ratio["zipf"] = hits["default"]
            measured["uniform_cached"] = load("small", SERVICE + "GetCustomer", gets["uniform"])
            run.hit_ratio["uniform_cached"] = hits["small"]
            measured["uniform_uncached"] = load("none", SERVICE + "GetCustomer", gets["uniform"])
            measured["update"] = load(
                "default", SERVICE + "UpdateCustomer", updates[r - 1], per_round
            )
            run.rounds.append({key: value.rps for key, value in measured.items()})
            for key, value in measured.items():
                run.p99_ms.setdefault(key, 0.0)
                run.p99_ms[key] = max(run.p99_ms[key], value.p99_ms)
            print(
                f"[{name}] reads round {r}/{rounds}: "
                + "  ".join(f"{key} {value.rps:.0f}/s" for key, value in measured.items())
                + f"  hit ratio zipf {run.hit_ratio['zipf']:.2f},"
                f" uniform {run.hit_ratio['uniform_cached']:.2f}",
                flush=True,
            )
    return run


def update(id: str) -> pb.UpdateCustomerRequest:
    change = json_format.ParseDict({"id": id, "etag": "1"}, Customer())
    change.status, change.description = "Suspended", "changed by the bench"
    request = pb.UpdateCustomerRequest(customer=change)
    request.update_mask.paths.extend(["status", "description"])
    return request


def _hit_ratio(before: dict[str, float], after: dict[str, float]) -> float:
    hits = after.get("cm_cache_hits_total", 0) - before.get("cm_cache_hits_total", 0)
    misses = after.get("cm_cache_misses_total", 0) - before.get("cm_cache_misses_total", 0)
    return hits / (hits + misses) if hits + misses else 0.0


def report(runs: list[ReadRun]) -> str:
    if not runs:
        return ""
    lines = [
        "",
        "## Reads at three hit ratios, and updates",
        "",
        f"Each database holds {runs[0].rows:,} customers (the main phase's customer, each"
        " with its own id). In interleaved rounds on one server (medians of the rounds"
        " shown): Health/Check; GetCustomer with ids drawn from Zipf(1.1) over every"
        " customer; UpdateCustomer changing status and description, each with its"
        " customer's etag. On two more servers on the same database: GetCustomer with ids"
        f" spread uniformly, against a cache of {SMALL_CACHE_ENTRIES:,} customers (a tenth of"
        " them) and against no cache (`--cache-mb 0`), each cache warmed by one pass of its"
        " load first. The one-hot-id Get is the main table's. Load: benchmarks/grpcload.c,"
        " 4 connections x 16 streams.",
        "",
        "| database | RPC | req/s | p99 ms (worst round) | hit ratio | ratio | to | target | met |",
        "|---|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for run in runs:
        rows: list[tuple[str, str, str | None, float | None]] = [
            ("Check", "check", None, None),
            ("GetCustomer, Zipf", "zipf", "check", GET_TARGETS[run.database]),
            ("GetCustomer, uniform, no cache", "uniform_uncached", "check", None),
            (
                "GetCustomer, uniform, 1/10 cached",
                "uniform_cached",
                "uniform_uncached",
                UNIFORM_TARGET,
            ),
            ("UpdateCustomer", "update", "check", UPDATE_TARGETS[run.database]),
        ]
        for label, key, to, target in rows:
            hits = run.hit_ratio.get(key)
            cells = [
                run.database,
                label,
                f"{run.median(key):.0f}",
                f"{run.p99_ms.get(key, 0.0):.1f}",
                f"{hits:.2f}" if hits is not None else "",
                f"{run.ratio(key, to):.2f}" if to else "",
                {"check": "Check", "uniform_uncached": "no cache"}.get(to or "", ""),
                f"≥ {target}" if target else "",
                ("yes" if run.ratio(key, to) >= target else "**no**") if to and target else "",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Calls that failed: " + ", ".join(f"{r.database} {r.errors}" for r in runs), ""]
    lines += ["```"]
    for run in runs:
        for label, key, to, target in (
            ("Get Zipf", "zipf", "check", GET_TARGETS[run.database]),
            ("Get unif.", "uniform_cached", "uniform_uncached", UNIFORM_TARGET),
            ("Update", "update", "check", UPDATE_TARGETS[run.database]),
        ):
            lines.append(f"{run.database:10} {label:10} {_bar(run.ratio(key, to), target)}")
    lines += ["```", "", "(each `█` is 0.05; `|` marks the target)", ""]
    return "\n".join(lines)


def _bar(ratio: float, target: float) -> str:
    cells = ["█"] * min(40, round(ratio / 0.05))
    mark = round(target / 0.05)
    cells += [" "] * (mark + 1 - len(cells))
    cells[mark] = "|"
    return f"{''.join(cells)} {ratio:.2f}"
