"""How ESM-2 computes a species' protein embeddings: number precision and batch size.

Torch-free, so that the command line offers them as choices without loading torch.
"""

from __future__ import annotations

PRECISIONS = ("float32", "float16", "bfloat16")
DEFAULT_PRECISION = "float32"  # the precision of the official gene tokens
TOKENS_PER_BATCH = {"cpu": 1024, "cuda": 4096}  # padded positions per batch (extract.py: 4096)
