"""Collecting per-file problems: raise at once (building datasets) or list them (``inspect``)."""

from __future__ import annotations

from typing import List


class Problems:
    """``report(message)`` raises ``ValueError(message)`` when ``strict``, else records it."""

    def __init__(self, strict: bool = True):
        self.strict = strict
        self.messages: List[str] = []

    def report(self, message: str) -> None:
        if self.strict:
            raise ValueError(message)
        self.messages.append(message)

    def summary(self) -> str:
        if not self.messages:
            return ""
        return " Problems: " + "; ".join(self.messages[:5]) + ("; ..." if len(self.messages) > 5 else "")
