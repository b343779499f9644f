"""SynID: synthetic face-recognition datasets with controllable identity attributes, as Dagster assets."""

import os

# oneDNN (torch's CPU matmul) keeps up to 1,024 compiled kernels with their buffers, one per product shape. The
# identity index multiplies cell-sized blocks of thousands of shapes, and that cache held 0.7 GB at 200k rows and
# several GB at 1M; models run few shapes, which 64 kernels keep. Read once, when torch first multiplies: set
# here, before any torch import of ours. The environment wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")

__version__ = "0.1.0"
