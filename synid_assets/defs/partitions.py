"""Identity batches: a dynamic partition per batch of identities ('batch-00000', 'batch-00001', ...)."""

from __future__ import annotations

import re
from collections.abc import Iterable

import dagster as dg

identity_batches = dg.DynamicPartitionsDefinition(name="identity_batches")

_BATCH_KEY = re.compile(r"^batch-(\d{5,})$")


def batch_key(number: int) -> str:
    return f"batch-{number:05d}"


def next_batch_keys(existing: Iterable[str], count: int) -> list[str]:
    """The next `count` keys after the highest numbered existing batch."""
    numbers = [int(m.group(1)) for k in existing if (m := _BATCH_KEY.match(k))]
    start = max(numbers) + 1 if numbers else 0
    return [batch_key(start + i) for i in range(count)]
