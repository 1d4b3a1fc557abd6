"""What the resource services are told at start-up (from config.Config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    base_url: str
    pin_pepper: bytes
    previous_peppers: tuple[bytes, ...] = ()
    """Peppers being rotated out: PINs hashed with them still verify, and are hashed
    again with `pin_pepper` when they do."""
    history: bool = True
    """Whether every change also gets its field-level history entry."""
