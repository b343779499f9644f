"""Identity vectors sampled in a face-recognition embedding space under a maximum cosine similarity bound.

`sample_vectors` fills slots in order with the gaussian, pca or repulsion sampler (sampler.py); every vector is
checked exactly, in blocks, against every vector accepted before it and the leakage gallery (accepted.py).
"""

from synid_assets.core.identity_vectors.accepted import max_pairwise_similarity
from synid_assets.core.identity_vectors.centres import CentresError, PcaGaussian, load_centres
from synid_assets.core.identity_vectors.sampler import (
    METHODS,
    PlacedVectors,
    SamplerSettings,
    VectorSettingsError,
    VectorSpaceFull,
    draw_seed,
    sample_vectors,
)

__all__ = [
    "METHODS", "CentresError", "PcaGaussian", "PlacedVectors", "SamplerSettings", "VectorSettingsError",
    "VectorSpaceFull", "draw_seed", "load_centres", "max_pairwise_similarity", "sample_vectors",
]
