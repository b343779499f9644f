"""Arc2Face's identity conditioning: the fixed ID prompt, the normalised ArcFace vector, and the token swap.

Arc2Face tokenizes "photo of a id person", replaces the embedding of the token "id" with the L2-normalised 512-d
ArcFace vector (zero-padded to the text width), and runs the CLIP text transformer on the result. These helpers are
the tensor-level part of that; the generator (arc2face.py) hooks them into the text encoder's forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

ID_PROMPT = "photo of a id person"
ID_TOKEN = "id"
ARCFACE_DIM = 512


def normalize_embedding(vector: Sequence[float] | np.ndarray) -> np.ndarray:
    """The L2-normalized float32 vector Arc2Face is conditioned on (ArcFace embeddings are compared by angle)."""
    import numpy as np

    array = np.asarray(vector, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(array))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("the ArcFace embedding is zero or not finite")
    return (array / norm).astype(np.float32)


def replace_id_token(
    input_embeds: torch.Tensor, input_ids: torch.Tensor, id_token_id: int, vectors: torch.Tensor
) -> torch.Tensor:
    """Token embeddings with the embedding at each row's "id" token replaced by that row's vector, zero-padded.

    input_embeds: [batch, seq, width] token embeddings; input_ids: [batch, seq]; vectors: [batch, d] with d <= width.
    Every row must hold the id token exactly once. Returns a new tensor (the input is not changed).
    """
    import torch

    batch, _, width = input_embeds.shape
    if vectors.ndim != 2 or vectors.shape[0] != batch:
        raise ValueError(f"vectors must be [batch={batch}, d], not {tuple(vectors.shape)}")
    if vectors.shape[1] > width:
        raise ValueError(f"a {vectors.shape[1]}-d vector does not fit the text width {width}")
    mask = input_ids == id_token_id
    counts = mask.sum(dim=1)
    if not bool((counts == 1).all()):
        raise ValueError(f"every row must hold the id token {id_token_id} exactly once (counts {counts.tolist()})")
    padded = torch.nn.functional.pad(vectors, (0, width - vectors.shape[1]))
    out = input_embeds.clone()
    out[mask] = padded.to(dtype=out.dtype, device=out.device)
    return out
