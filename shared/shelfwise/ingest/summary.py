"""The summary of one ingested object (events or a catalogue file), stored as JSON beside the output."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class IngestSummary:
    """What happened to one raw object. Invariant: valid + quarantined + duplicates = rows read."""

    source: str
    object_hash: str
    format: str | None = None
    rows_read: int = 0
    rows_valid: int = 0
    rows_quarantined: int = 0
    duplicates: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    quarantine: str | None = None
    summary: str | None = None
    event_dates: list[str] = field(default_factory=list)
    sessions_derived: int = 0
    event_ids_derived: int = 0
    seconds: float = 0.0
    skipped: bool = False
    warnings: list[str] = field(default_factory=list)
    # Bot-like actors among the behaviour rows (shelfwise.bots): counts, share, rules; their rows stay
    # in the curated output and the flagged actors are listed at ``bot_flags``.
    bots: dict[str, Any] = field(default_factory=dict)
    bot_flags: str | None = None
    # The range the object's instants were held to (``valid_from``, the floor, and ``valid_until``);
    # rows outside it are quarantined as timestamp_out_of_range.
    time_range: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IngestSummary:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})
