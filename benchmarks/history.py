"""`make bench`, history phase: what the field-level history costs Create and Update.

Two servers on one database of their own: history on (the default) and history off
(`--history false`), driven in interleaved rounds, each round in the other order, so the
machine's drift falls on both alike. CreateCustomer sends the main phase's customer (h2load);
UpdateCustomer changes two fields of customers loaded first, each once, with its etag
(benchmarks/grpcload.c, a body per request). The target: history on keeps at least 90%
of the throughput of history off, for each method.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from benchmarks import grpcload
from benchmarks.reads import customer_id, update, write_customers
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.customer_pb2 import Customer

TARGET = 0.9
SERVICE = "tmf629.v1.CustomerManagementService/"
Serve = Callable[..., AbstractContextManager[tuple[str, Any]]]
ROLES = {"on": (), "off": ("--history", "false")}


@dataclass
class HistoryRun:
    database: str
    rounds: list[dict[str, float]] = field(default_factory=list)
    """Per round: req/s of create_on, create_off, update_on, update_off."""
    errors: int = 0

    def median(self, name: str) -> float:
        return float(statistics.median(r[name] for r in self.rounds))

    def ratio(self, method: str) -> float:
        """History on over off, the median of the rounds' ratios."""
        return float(statistics.median(r[f"{method}_on"] / r[f"{method}_off"] for r in self.rounds))


def met(run: HistoryRun) -> bool:
    return run.errors == 0 and all(run.ratio(m) >= TARGET for m in ("create", "update"))


def history_run(
    name: str,
    url: str,
    workdir: Path,
    serve: Serve,
    load_database: Callable[[str, Path], None],
    *,
    rounds: int,
    requests: int,
) -> HistoryRun:
    from benchmarks.run import CUSTOMER

    binary = grpcload.build(workdir)
    # Each (server, round) updates customers of its own, once each: their etag is "1".
    per_load = requests // 2
    load_database(url, write_customers(workdir / f"history-{name}.jsonl", 2 * rounds * per_load))
    bodies = workdir / f"history-{name}"
    bodies.mkdir(exist_ok=True)
    create = grpcload.write_bodies(
        bodies / "create.bin",
        [pb.CreateCustomerRequest(customer=json_format.ParseDict(CUSTOMER, Customer()))],
    )
    updates = {
        (role, r): grpcload.write_bodies(
            bodies / f"update-{role}-{r}.bin",
            (update(customer_id((2 * r + i) * per_load + k)) for k in range(per_load)),
        )
        for i, role in enumerate(ROLES)
        for r in range(rounds)
    }
    run = HistoryRun(name)
    with contextlib.ExitStack() as servers:
        targets = {
            role: servers.enter_context(serve(url, workdir, *options))[0]
            for role, options in ROLES.items()
        }
        for r in range(rounds):
            measured: dict[str, float] = {}
            order = list(targets.items())
            for role, target in order if r % 2 == 0 else reversed(order):  # neither goes first
                done = grpcload.run(
                    binary, target, SERVICE + "CreateCustomer", create, requests=requests
                )
                measured[f"create_{role}"] = done.rps
                run.errors += done.requests - done.ok
                done = grpcload.run(
                    binary,
                    target,
                    SERVICE + "UpdateCustomer",
                    updates[(role, r)],
                    requests=per_load,
                )
                measured[f"update_{role}"] = done.rps
                run.errors += done.requests - done.ok
            run.rounds.append(measured)
            print(
                f"[{name}] history round {r + 1}/{rounds}: "
                + "  ".join(f"{key} {value:.0f}/s" for key, value in measured.items()),
                flush=True,
            )
    return run


def report(runs: list[HistoryRun]) -> str:
    if not runs:
        return ""
    lines = [
        "",
        "## Field-level history: its cost to Create and Update",
        "",
        "Two servers on one database of their own, history on (the default) and off"
        " (`--history false`), in interleaved rounds: CreateCustomer (the main phase's"
        " customer) and UpdateCustomer (two fields of a loaded customer, each once, with its"
        " etag), by benchmarks/grpcload.c, 4 connections of 16 streams, medians of the rounds."
        f" Target: history on keeps at least {TARGET:.0%} of history off's throughput.",
        "",
        "| database | method | history on req/s | history off req/s | on / off | target | met |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        for method, rpc in (("create", "CreateCustomer"), ("update", "UpdateCustomer")):
            ratio = run.ratio(method)
            lines.append(
                f"| {run.database} | {rpc} | {run.median(f'{method}_on'):.0f}"
                f" | {run.median(f'{method}_off'):.0f} | {ratio:.2f} | ≥ {TARGET}"
                f" | {'yes' if ratio >= TARGET else '**no**'} |"
            )
    bars = [
        (f"{run.database} {method} {role}", run.median(f"{method}_{role}"))
        for run in runs
        for method in ("create", "update")
        for role in ROLES
    ]
    top = max(rps for _, rps in bars)
    lines += [
        "",
        "```",
        *(f"{label:22} {'█' * round(rps / top * 40)} {rps:.0f}" for label, rps in bars),
        "```",
        f"(errors: {sum(run.errors for run in runs)})",
        "",
    ]
    return "\n".join(lines)
