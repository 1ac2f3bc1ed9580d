"""flowmasond: a durable, checkpointing pipeline orchestrator daemon."""

from __future__ import annotations

__version__ = "0.1.0"
