"""What every task shares: a JSON-able spec of its preprocessing, and rebuilding from it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar


class Task:
    name: ClassVar[str]
    spec_class: ClassVar[type]  # a frozen dataclass of JSON values

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def to_json(self) -> dict:
        return asdict(self.spec)

    @classmethod
    def from_spec(cls, spec: dict) -> Task:
        return cls(cls.spec_class(**spec))
