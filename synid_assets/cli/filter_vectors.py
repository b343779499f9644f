"""`synid filter`: the identity filter on embeddings alone (a .npy)."""

from __future__ import annotations

import argparse
import sys


def run_filter(vectors: str, threshold: float, mode: str, target_fmr: float | None, out: str) -> int:
    """The identity filter on vectors alone: an (n, d) .npy in identity order -> {"kept": [...]} JSON."""
    from synid_assets.core.filtering.scale import filter_vectors_file

    if mode == "fmr" and target_fmr is None:
        print("synid filter: --mode fmr needs --target-fmr", file=sys.stderr)
        return 2
    try:
        result = filter_vectors_file(vectors, threshold, mode, target_fmr, out)
    except ValueError as exc:
        print(f"synid filter: {exc}", file=sys.stderr)
        return 2
    search = result["search"]
    where = f"{search.get('device', 'cpu')} {search.get('precision', '')}".strip()
    how = f"exact ({where})" if result["method"] == "exact" else "index"
    figures = f"FMR before {result['fmr_before']:.3e}, after {result['fmr_after']:.3e}"
    if result["recall"] is not None:  # the index: figures count only the pairs it found
        recall = result["recall"]
        figures = (
            f"estimates: {figures} from the pairs found; index recall {recall['estimate']:.5f} "
            f"({recall['missed']} of {recall['pairs']} pairs of {recall['rows']} sampled rows missed), "
            f"FMR after from the sampled rows {result['fmr_after_sampled']:.3e}"
        )
    print(f"{mode}: kept {len(result['kept'])} of {result['n']} (pairs above {threshold}: {result['edges']}, "
          f"search {how}; {figures}) -> {out}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    filter_cmd = commands.add_parser("filter", help="filter identities on embeddings alone (a .npy)")
    filter_cmd.add_argument("--vectors", required=True, help="(n, d) float .npy, rows in identity order")
    filter_cmd.add_argument("--threshold", type=float, required=True, help="cosine similarity threshold")
    filter_cmd.add_argument("--mode", choices=["strict", "fmr"], default="strict")
    filter_cmd.add_argument("--target-fmr", type=float, default=None, help="fmr mode: dataset FMR to reach")
    filter_cmd.add_argument("--out", required=True, help="JSON file to write ({'kept': [row indices]})")
    filter_cmd.set_defaults(
        handler=lambda args: run_filter(args.vectors, args.threshold, args.mode, args.target_fmr, args.out)
    )
