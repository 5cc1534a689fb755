"""Keyed pseudonymisation of user ids: one definition for the ingest, serving and event collection.

The same key gives the same pseudonym everywhere, so a user's history in curated data (hashed by
the ingest), the user index of a bundle trained on it, the user id of a recommendation request
(hashed by serving) and of a feedback event (hashed by collection) all name the same person
without anyone downstream holding the raw id. Keyed BLAKE2b: irreversible without the key.

Hashing is idempotent: a value that already is a pseudonym (``p_`` and 32 hex digits) is kept,
so events that collection hashed are not hashed a second time by the ingest. Hashlib only: the
serving and collection functions import it without numpy or pyarrow.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from typing import Any

from shelfwise.errors import ConfigurationError

PREFIX = "p_"
_PSEUDONYM = re.compile(r"p_[0-9a-f]{32}")


def is_pseudonym(value: str) -> bool:
    """Whether ``value`` already has the form of a pseudonym."""
    return len(value) == 34 and _PSEUDONYM.fullmatch(value) is not None


class Pseudonymiser:
    """Keyed BLAKE2b of user ids, with a bounded cache of recent ids."""

    PREFIX = PREFIX

    def __init__(self, key: bytes, cache_size: int = 500_000) -> None:
        if not key:
            raise ValueError("pseudonymisation key must not be empty")
        self._key = hashlib.blake2b(key, digest_size=32).digest()
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size

    def one(self, value: str) -> str:
        """The pseudonym of one id (a pseudonym stays as it is)."""
        out = self._cache.get(value)
        if out is None:
            if is_pseudonym(value):
                return value
            digest = hashlib.blake2b(
                value.encode("utf-8", "surrogatepass"), key=self._key, digest_size=16
            ).hexdigest()
            out = PREFIX + digest
            self._cache[value] = out
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    def optional(self, value: str | None) -> str | None:
        return None if value is None else self.one(value)


def read_key(ssm: Any, parameter_name: str) -> bytes:
    """The key from its SSM SecureString (``ssm`` a boto3 or ``shelfwise.aws_lite`` client)."""
    resp = ssm.get_parameters(Names=[parameter_name], WithDecryption=True)
    values = [p.get("Value") for p in resp.get("Parameters", []) if p.get("Name") == parameter_name]
    if not values or not values[0]:
        raise ConfigurationError(f"pseudonymisation key parameter {parameter_name!r} is missing or empty")
    return str(values[0]).encode("utf-8")


# Obvious personal data in free-form values: e-mail addresses, international phone numbers, and
# whatever sits under a key that names such data. Replaced by their pseudonym (still joinable).
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_PHONE = re.compile(r"\+\d[\d\s().-]{6,}\d")
_PERSONAL_KEY = re.compile(r"e-?mail|phone|mobile|msisdn|\btel\b|telephone|user_?id|customer_?id", re.I)


def scrub_text(text: str, pseudonymiser: Pseudonymiser) -> str:
    """``text`` with every e-mail address and international phone number replaced by its pseudonym."""
    if "@" in text:
        text = _EMAIL.sub(lambda m: pseudonymiser.one(m.group(0)), text)
    if "+" in text:
        text = _PHONE.sub(lambda m: pseudonymiser.one(m.group(0)), text)
    return text


def scrub(value: Any, pseudonymiser: Pseudonymiser) -> Any:
    """A free-form JSON value with obvious personal data pseudonymised (iterative, any depth)."""

    def one(v: Any, key: str | None) -> Any:
        if isinstance(v, str):
            return (
                pseudonymiser.one(v)
                if key is not None and _PERSONAL_KEY.search(key)
                else scrub_text(v, pseudonymiser)
            )
        if (
            isinstance(v, int | float)
            and not isinstance(v, bool)
            and key is not None
            and _PERSONAL_KEY.search(key)
        ):
            return pseudonymiser.one(str(v))
        return v

    if not isinstance(value, dict | list):
        return one(value, None)
    root: Any = {} if isinstance(value, dict) else []
    stack: list[tuple[Any, Any]] = [(value, root)]
    while stack:
        src, dst = stack.pop()
        items = src.items() if isinstance(src, dict) else enumerate(src)
        for k, v in items:
            key = k if isinstance(k, str) else None
            if isinstance(v, dict | list):
                child: Any = {} if isinstance(v, dict) else []
                stack.append((v, child))
                out = child
            else:
                out = one(v, key)
            if isinstance(dst, dict):
                dst[scrub_text(k, pseudonymiser) if isinstance(k, str) else k] = out
            else:
                dst.append(out)
    return root
