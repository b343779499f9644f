"""Seed derivation: every random draw of an identity derives from (dataset seed, batch key, index)."""

from __future__ import annotations

import hashlib

import numpy as np

SEED_BITS = 63  # DuckDB UBIGINT holds 64 bits; 63 keeps the seed valid as a signed int64 everywhere too.


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any sequence of ints and strings (blake2b of their text, '|'-joined)."""
    text = "|".join(str(p) for p in parts).encode("utf-8")
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)


def identity_seed(dataset_seed: int, batch_key: str, index: int) -> int:
    """The recorded seed of one identity; all of its draws are sub-streams of this seed."""
    return derive_seed("identity", dataset_seed, batch_key, index)


def stream_seed(seed: int, stream: str, index: int = 0) -> int:
    """A named sub-stream of an identity seed ('attributes', 'prompt', 'document', 'live', ...)."""
    return derive_seed(stream, seed, index)


def rng_for(seed: int, stream: str, index: int = 0) -> np.random.Generator:
    """A numpy Generator for a named sub-stream of a recorded seed."""
    return np.random.default_rng(stream_seed(seed, stream, index))


def identity_id(batch_key: str, index: int) -> str:
    """Identity ids are readable and sort in generation order: 'batch-00000-0007'."""
    return f"{batch_key}-{index:04d}"
