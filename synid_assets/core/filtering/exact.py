"""Exact above-threshold pairs: blocked products over the upper triangle with torch, on the CPU (every core) or a
GPU, and the one similarity every search decides on.

The similarity of two identities is the float64 dot product of their float32 unit rows (`rescore`). Every
search scores candidates with faster, rounded products (bfloat16 or float32 on the CPU; float16 or bfloat16 on
a GPU), keeps those above `threshold - margin`, where the margin bounds the rounding error of that product, and
re-scores them in float64. So no pair's decision depends on the device, the precision or the BLAS, and the exact search
returns precisely the pairs above the threshold: strict mode's promise holds by construction.

Rounding bounds, for unit rows of d <= 4096 dimensions (|sum a_i b_i| <= sum |a_i b_i| <= 1):
* float32 products, float32 accumulation: error <= d * 2^-24 ~ 2.4e-4 at d = 4096 (worst case; ~1e-6 typical);
* float16 inputs (unit rounding 2^-11), float32 accumulation: (2 * 2^-11 + 2^-22) + subnormals + the float32
  sum <= 1.3e-3;
* bfloat16 inputs (2^-8): 2 * 2^-8 + ... <= 8.1e-3.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

MARGINS = {"float32": 5e-4, "float16": 3e-3, "bfloat16": 1.2e-2}
# CPU blocks: rows x columns of one product (256 MB in bfloat16), large enough that AMX runs near its best rate
CPU_BLOCK, CPU_COL_BLOCK = 8192, 16_384

# seconds one multiply-add takes on this machine's CPU, measured once per process (see cpu_exact_seconds)
_CPU_SECONDS_PER_MAC: list[float] = []
_CPU_PRECISION: list[str] = []


def rescore(x: np.ndarray, pairs: np.ndarray, step: int = 8192) -> np.ndarray:
    """The float64 similarity of each (i, j) pair of unit float32 rows: the value every decision uses.
    (`step` pairs at a time: two float64 gathers of 32 MB at d = 512, where 65,536 cost 0.5 GB of peak memory.)"""
    out = np.empty(len(pairs), dtype=np.float64)
    for s in range(0, len(pairs), step):
        p = pairs[s : s + step]
        out[s : s + step] = np.einsum("ij,ij->i", x[p[:, 0]].astype(np.float64), x[p[:, 1]].astype(np.float64))
    return out


def similarity_block(x: np.ndarray, threshold: float) -> np.ndarray:
    """x @ x.T of unit float32 rows as float64, with every entry within the float32 rounding margin of
    `threshold` re-scored in float64 (`rescore`): the dense block decides each pair as every search does."""
    sims = (x @ x.T).astype(np.float64)
    near = np.argwhere(np.abs(sims - threshold) <= MARGINS["float32"])
    sims[near[:, 0], near[:, 1]] = rescore(x, near)
    return sims


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (False where torch is the CPU build)."""
    import torch

    return bool(torch.cuda.is_available())


def default_device() -> str:
    return "cuda" if cuda_available() else "cpu"


def cpu_precision() -> str:
    """The CPU product precision of the exact search: "bfloat16" where this CPU multiplies bfloat16 faster than
    float32 (AMX / AVX512-BF16: ~3.5x on the Sapphire Rapids dev box with the row-maximum thresholding), else
    "float32". Measured once per process; either way every decision is the float64 re-score."""
    _measure_cpu()
    return _CPU_PRECISION[0]


def _measure_cpu() -> None:
    """Time an 8192 x 16384 x 512 block (product into a reused buffer and thresholding, as exact_pairs does it)
    in both precisions."""
    if _CPU_SECONDS_PER_MAC:
        return
    import torch

    a = torch.nn.functional.normalize(torch.randn(CPU_BLOCK, 512), dim=1)
    b = torch.nn.functional.normalize(torch.randn(CPU_COL_BLOCK, 512), dim=1)
    rates = {}
    for precision in ("float32", "bfloat16"):
        dtype = getattr(torch, precision)
        at, bt = a.to(dtype), b.to(dtype)
        out = torch.empty(CPU_BLOCK, CPU_COL_BLOCK, dtype=dtype)
        block_hits(torch.mm(at, bt.T, out=out), 0.5)  # warm-up
        t = time.perf_counter()
        for _ in range(2):
            block_hits(torch.mm(at, bt.T, out=out), 0.5)
        rates[precision] = (time.perf_counter() - t) / (2 * CPU_BLOCK * CPU_COL_BLOCK * 512)
    best = min(rates, key=lambda k: rates[k])
    _CPU_PRECISION.append(best)
    _CPU_SECONDS_PER_MAC.append(rates[best])


def cpu_exact_seconds(n: int, dim: int) -> float:
    """Estimated seconds of the exact search on this CPU: n(n-1)/2 * dim multiply-adds at the rate of a short
    torch block (product and thresholding, every core, `cpu_precision`) measured here, plus a third for blocks
    with many hits."""
    _measure_cpu()
    return 1.33 * _CPU_SECONDS_PER_MAC[0] * n * (n - 1) / 2 * dim


def comparable(sims: Any, cut: float) -> tuple[Any, float | int]:
    """(sims', cut') with `sims' > cut'` exactly where `sims > cut` for the unrounded float `cut`.

    A tensor compared with a Python float compares in the tensor's precision, i.e. with `cut` rounded to the
    nearest bfloat16 / float16 / float32, possibly upwards, which drops the entries between the cut and its
    rounding. For cut > 0 the entries' bit patterns are compared as integers instead (positive IEEE floats are
    ordered as their bits and negative ones read as negative integers) with `cut` rounded down: exact, and
    half the cost of a bfloat16 maximum on the CPU. For cut <= 0 (never a useful threshold) a float64 copy."""
    import torch

    if cut <= 0:
        return sims.double(), cut
    ints = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}[sims.dtype]
    rounded = torch.tensor(cut, dtype=torch.float64).to(sims.dtype)
    bits = int(rounded.view(ints))
    # round down: the next lower positive float is bits - 1
    return sims.view(ints), bits - 1 if float(rounded) > cut else bits


def block_hits(sims: Any, cut: float) -> Any:
    """(row, column) indices of the entries of the product block `sims` above `cut` (see `comparable`); a row
    maximum first, as most rows hold none (~4x cheaper on the CPU than nonzero over the whole block)."""
    import torch

    sims, cut = comparable(sims, cut)
    rows = torch.nonzero(sims.amax(dim=1) > cut).squeeze(1)
    hits = torch.nonzero(sims.index_select(0, rows) > cut)
    hits[:, 0] = rows[hits[:, 0]]
    return hits


def exact_pairs(
    x: np.ndarray,
    threshold: float,
    device: str | None = None,
    precision: str | None = None,
    block: int | None = None,
    col_block: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Every unordered pair (i < j) of unit rows with float64 similarity > threshold.

    device: "cpu", "cuda", "cuda:1", ... (default: a GPU when torch sees one). precision: the product's dtype,
    "float32", "float16" (default on a GPU) or "bfloat16" (default on the CPU where it is faster, see
    `cpu_precision`). Returns (pairs int64 (E, 2) sorted by (i, j), float64 similarities (E,), stats).
    """
    import torch

    device = device or default_device()
    on_gpu = not device.startswith("cpu")
    precision = precision or ("float16" if on_gpu else cpu_precision())
    if precision not in MARGINS:
        raise ValueError(f"precision must be one of {', '.join(MARGINS)}, got {precision!r}")
    n, dim = x.shape
    block = block or (16_384 if on_gpu else CPU_BLOCK)
    col_block = col_block or (131_072 if on_gpu else CPU_COL_BLOCK)
    margin = MARGINS[precision]
    t0 = time.perf_counter()
    dtype = getattr(torch, precision)
    reduced = None
    if on_gpu:
        # products accumulate in float32: the margins above assume it
        reduced = torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    try:
        rows_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device=device, dtype=dtype)
        found_i: list[np.ndarray] = []
        found_j: list[np.ndarray] = []
        cut = float(threshold) - margin
        # one product buffer for every block: a fresh 256 MB output per product costs the CPU as much time in
        # page faults as in the product
        buffer = torch.empty(min(block, n) * min(col_block, n), dtype=dtype, device=device)
        for r0 in range(0, n, block):
            rows = rows_t[r0 : r0 + block]
            for c0 in range(r0, n, col_block):
                cols = rows_t[c0 : c0 + col_block]
                sims = torch.mm(rows, cols.T, out=buffer[: len(rows) * len(cols)].view(len(rows), len(cols)))
                hits = torch.nonzero(torch.gt(*comparable(sims, cut))) if on_gpu else block_hits(sims, cut)
                hits = hits.cpu().numpy()
                if len(hits):
                    gi, gj = hits[:, 0] + r0, hits[:, 1] + c0
                    keep = gi < gj
                    found_i.append(gi[keep])
                    found_j.append(gj[keep])
        if on_gpu:
            torch.cuda.synchronize(device)
    finally:
        if reduced is not None:
            torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = reduced
    t1 = time.perf_counter()
    cand = (
        np.stack([np.concatenate(found_i), np.concatenate(found_j)], axis=1).astype(np.int64)
        if found_i
        else np.zeros((0, 2), np.int64)
    )
    sims64 = rescore(x, cand)
    above = sims64 > threshold
    pairs, sims64 = cand[above], sims64[above]
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    stats = {
        "device": device if not on_gpu else f"{device} ({torch.cuda.get_device_name(device)})",
        "precision": precision,
        "margin": margin,
        "rescored": len(cand),
        "candidates": n * (n - 1) // 2,
        "products_s": t1 - t0,
        "rescore_s": time.perf_counter() - t1,
    }
    return pairs[order], sims64[order], stats


def query_pairs(x: np.ndarray, rows: np.ndarray, threshold: float, col_block: int = 16_384) -> np.ndarray:
    """Exact above-threshold pairs (as unordered (i < j) int64 pairs, unique, sorted) between the given query
    rows and every row: the ground truth a sampled recall estimate compares an index with. bfloat16 products
    (every candidate within MARGINS["bfloat16"] re-scored in float64): 3.0 s for 2,000 rows against 200k, where
    numpy's float32 products alone took 4.2 s; the index's calibration and the recall estimate each search
    thousands of rows against all of them."""
    import torch

    rows = np.unique(np.asarray(rows, dtype=np.int64))
    n = x.shape[0]
    cut = threshold - MARGINS["bfloat16"]
    queries = torch.from_numpy(np.ascontiguousarray(x[rows], dtype=np.float32)).to(torch.bfloat16)
    found: list[np.ndarray] = []
    for c0 in range(0, n, col_block):  # each column block converted once, for every query
        cols = torch.from_numpy(np.ascontiguousarray(x[c0 : c0 + col_block], dtype=np.float32)).to(torch.bfloat16)
        for s in range(0, len(rows), 4096):
            hits = block_hits(queries[s : s + 4096] @ cols.T, cut).numpy()
            a, b = rows[s + hits[:, 0]], hits[:, 1] + c0
            keep = a != b
            found.append(np.stack([np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])], axis=1))
    cand = np.unique(np.concatenate(found), axis=0) if found else np.zeros((0, 2), np.int64)
    return cand[rescore(x, cand) > threshold].astype(np.int64)
