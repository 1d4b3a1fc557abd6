"""The NATS JetStream the relay tests publish into: a stream of each test's own, read
back message by message."""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import nats
from nats.js.errors import NotFoundError


@dataclass(frozen=True)
class Target:
    url: str
    stream: str
    prefix: str

    def args(self) -> list[str]:
        return [
            "--publish-nats", self.url, "--nats-stream", self.stream,
            "--nats-subject-prefix", self.prefix,
        ]  # fmt: skip

    def settings(self) -> dict[str, Any]:
        return {
            "publish_nats": self.url,
            "nats_stream": self.stream,
            "nats_subject_prefix": self.prefix,
        }


def new_target(url: str) -> Target:
    name = uuid.uuid4().hex[:12]
    return Target(url, f"TEST_{name.upper()}", f"test{name}")


@dataclass(frozen=True)
class Published:
    sequence: int
    subject: str
    headers: dict[str, str]
    data: bytes

    @property
    def envelope(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.data)
        return loaded

    @property
    def event_id(self) -> int:
        """The CloudEvent's id (in the body, or in ce-id in the protobuf mode)."""
        return int(self.headers.get("ce-id") or self.envelope["id"])


async def messages(target: Target) -> list[Published]:
    """Every message in the stream, in the stream's order."""
    async with connect(target.url) as stream:
        try:
            info = await stream.stream_info(target.stream)
        except NotFoundError:
            return []
        found = []
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            message = await stream.get_msg(target.stream, seq=sequence)
            found.append(
                Published(sequence, message.subject, dict(message.headers or {}), message.data)
            )
        return found


async def count(target: Target) -> int:
    """Messages in the stream (0 before it exists)."""
    async with connect(target.url) as stream:
        try:
            info = await stream.stream_info(target.stream)
        except NotFoundError:
            return 0
        return int(info.state.messages)


class connect:  # used as `async with connect(url) as stream`
    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: Any = None

    async def __aenter__(self) -> Any:
        self.connection = await nats.connect(self.url, connect_timeout=5, allow_reconnect=False)
        return self.connection.jetstream()

    async def __aexit__(self, *_: object) -> None:
        await self.connection.close()


async def remove(target: Target) -> None:
    async with connect(target.url) as stream:
        with contextlib.suppress(NotFoundError):
            await stream.delete_stream(target.stream)
