"""The C load generator (benchmarks/grpcload.c) for loads whose requests differ: h2load
sends one body to every request, which a Get over many ids, or Updates that each carry
their own etag, cannot use. It is built once per run with the machine's C compiler and
libnghttp2 (Debian's libnghttp2-dev, installed here if missing, as h2load is)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

SOURCE = Path(__file__).with_name("grpcload.c")
NGHTTP2_HEADER = Path("/usr/include/nghttp2/nghttp2.h")


@dataclass(frozen=True)
class Load:
    """What one grpcload run measured."""

    requests: int
    seconds: float
    rps: float
    ok_rps: float
    p50_ms: float
    p99_ms: float
    ok_p50_ms: float
    ok_p99_ms: float
    failed: int
    failed_within_100ms: int
    statuses: dict[str, int]

    @property
    def ok(self) -> int:
        return self.statuses.get("0", 0)


def build(workdir: Path) -> Path:
    """Compiles the load generator into `workdir`; returns the binary."""
    if not NGHTTP2_HEADER.exists():
        sys.exit("the load generator needs libnghttp2's headers (libnghttp2-dev): `make bench`")
    binary = workdir / "grpcload"
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("the load generator needs a C compiler (cc)")
    subprocess.run(
        [compiler, "-O2", "-o", str(binary), str(SOURCE), "-lnghttp2"],
        check=True,
        capture_output=True,
    )
    return binary


def write_bodies(path: Path, messages: Iterable[Message]) -> Path:
    """The messages as gRPC frames (5-byte prefix), one after another."""
    with path.open("wb") as out:
        for message in messages:
            data = message.SerializeToString()
            out.write(struct.pack(">BI", 0, len(data)) + data)
    return path


def read_frames(path: Path) -> list[bytes]:
    """The messages of a file of gRPC frames (as `run` records OK responses)."""
    data = path.read_bytes()
    messages, at = [], 0
    while at + 5 <= len(data):
        (length,) = struct.unpack(">I", data[at + 1 : at + 5])
        messages.append(data[at + 5 : at + 5 + length])
        at += 5 + length
    return messages


def run(
    binary: Path,
    target: str,
    method: str,
    bodies: Path,
    *,
    connections: int = 4,
    streams: int = 16,
    requests: int = 20_000,
    timeout_ms: int = 0,
    seconds: float = 0.0,
    record: Path | None = None,
) -> Load:
    """Sends `requests` calls (or as many as fit in `seconds`) with `connections` x
    `streams` in flight, each with the next body of the file."""
    host, port = target.rsplit(":", 1)
    command = [
        str(binary),
        host,
        port,
        f"/{method}",
        str(bodies),
        str(connections),
        str(streams),
        str(requests),
        str(timeout_ms),
        str(seconds),
    ]
    if record is not None:
        command.append(str(record))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"grpcload failed for {method}: {result.stderr.strip()}")
    data: dict[str, Any] = json.loads(result.stdout)
    return Load(**data)


def scrape(port: int) -> dict[str, float]:
    """The server's Prometheus metrics without labels, by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            values[name] = float(value)
    return values
