"""The runtime's clock and the schedule expressions it fires (``rate(...)``, ``cron(...)``).

Tests own time: a frozen clock moves only when told (``advance``), so an hour of platform time
(schedules, metric periods, alarm evaluations) passes in seconds of wall time and the same run
always sees the same instants. ``local up`` uses a clock that follows wall time instead.
"""

from __future__ import annotations

import calendar
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


class Clock:
    """Platform time in epoch seconds; frozen (moves on ``advance``) or following wall time."""

    def __init__(self, start: float | datetime | None = None, *, follow_wall: bool = False) -> None:
        if isinstance(start, datetime):
            start = start.timestamp()
        self._base = float(start if start is not None else time.time())
        self._wall0 = time.monotonic()
        self.follow_wall = follow_wall
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            if self.follow_wall:
                return self._base + (time.monotonic() - self._wall0)
            return self._base

    def now_dt(self) -> datetime:
        return datetime.fromtimestamp(self.now(), tz=UTC)

    def set(self, t: float) -> None:
        """Move to instant ``t`` (never backwards)."""
        with self._lock:
            current = self._base + (time.monotonic() - self._wall0 if self.follow_wall else 0.0)
            if t < current - 1e-9:
                raise ValueError("the clock never goes backwards")
            self._base, self._wall0 = t, time.monotonic()

    def advance(self, seconds: float) -> float:
        self.set(self.now() + seconds)
        return self.now()


def iso(t: float) -> str:
    """ISO-8601 UTC with a Z, as AWS events carry it."""
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- schedules


class ScheduleError(ValueError):
    """A schedule expression the runtime cannot parse."""


_UNITS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1
    )
}
_DAYS = {
    d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], start=1)
}  # AWS: 1 = Sunday


@dataclass(frozen=True)
class Schedule:
    """A parsed ``rate(...)``, ``cron(...)`` or ``at(...)`` expression."""

    expression: str

    def __post_init__(self) -> None:
        self.next_after(0.0, 0.0)  # validate eagerly

    def next_after(self, t: float, created: float) -> float | None:
        """The first firing instant strictly after ``t`` (``None`` if it never fires again).

        ``rate`` schedules fire every interval counted from ``created`` (EventBridge fires the
        first one an interval after the rule is created); ``cron`` fires at matching minutes.
        """
        expr = self.expression.strip()
        m = re.fullmatch(r"rate\(\s*(\d+)\s+([a-z]+)\s*\)", expr)
        if m:
            n, unit = int(m.group(1)), m.group(2)
            if unit not in _UNITS or n <= 0 or (n == 1) != unit.endswith(("minute", "hour", "day")):
                raise ScheduleError(f"bad rate expression {expr!r}")
            step = n * _UNITS[unit]
            k = max(1, int((t - created) // step) + 1)
            return created + k * step
        m = re.fullmatch(r"cron\((.+)\)", expr)
        if m:
            return _Cron(m.group(1)).next_after(t)
        m = re.fullmatch(r"at\((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\)", expr)
        if m:
            at = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
            return float(at) if at > t else None
        raise ScheduleError(f"unsupported schedule expression {expr!r}")


class _Cron:
    """AWS six-field cron: minutes hours day-of-month month day-of-week year (UTC)."""

    def __init__(self, body: str) -> None:
        fields = body.split()
        if len(fields) != 6:
            raise ScheduleError(f"cron needs 6 fields, got {body!r}")
        minutes, hours, dom, month, dow, year = fields
        if "?" not in (dom, dow):
            raise ScheduleError(f"cron: one of day-of-month / day-of-week must be '?': {body!r}")
        self.minutes = _field(minutes, 0, 59, {})
        self.hours = _field(hours, 0, 23, {})
        self.dom = None if dom == "?" else _field(dom, 1, 31, {})
        self.month = _field(month, 1, 12, _MONTHS)
        self.dow = None if dow == "?" else _field(dow, 1, 7, _DAYS)
        self.year = _field(year, 1970, 2199, {})

    def matches(self, dt: datetime) -> bool:
        aws_dow = (dt.isoweekday() % 7) + 1  # Sunday = 1
        return (
            dt.minute in self.minutes
            and dt.hour in self.hours
            and dt.month in self.month
            and dt.year in self.year
            and (self.dom is None or dt.day in self.dom)
            and (self.dow is None or aws_dow in self.dow)
        )

    def next_after(self, t: float) -> float | None:
        dt = datetime.fromtimestamp(t, tz=UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = dt + timedelta(days=366 * 5)
        while dt < limit:
            if dt.year not in self.year or dt.month not in self.month:
                dt = (dt.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
                continue
            if not self.matches(dt.replace(hour=0, minute=0)) and not self._day_ok(dt):
                dt = dt.replace(hour=0, minute=0) + timedelta(days=1)
                continue
            if dt.hour not in self.hours:
                dt = dt.replace(minute=0) + timedelta(hours=1)
                continue
            if self.matches(dt):
                return dt.timestamp()
            dt += timedelta(minutes=1)
        return None

    def _day_ok(self, dt: datetime) -> bool:
        aws_dow = (dt.isoweekday() % 7) + 1
        return (self.dom is None or dt.day in self.dom) and (self.dow is None or aws_dow in self.dow)


def _field(text: str, lo: int, hi: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
        if part in {"*", "?"}:
            a, b = lo, hi
        elif "-" in part:
            a_text, b_text = part.split("-", 1)
            a, b = _value(a_text, names), _value(b_text, names)
        else:
            a = _value(part, names)
            b = hi if step != 1 else a
        if not (lo <= a <= hi and lo <= b <= hi):
            raise ScheduleError(f"cron field value out of range: {text!r}")
        values.update(range(a, b + 1, step))
    return frozenset(values)


def _value(text: str, names: dict[str, int]) -> int:
    key = text.upper()
    if key in names:
        return names[key]
    if not text.isdigit():
        raise ScheduleError(f"unsupported cron token {text!r} (L, W and # are not supported)")
    return int(text)
