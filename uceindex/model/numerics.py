"""How the network computes: its forward mode and number precision, the choices a caller has.

Torch-free, so that the command line offers them as choices without loading torch.
"""

from __future__ import annotations

MODES = ("fast", "reference")  # reference reproduces the reference code's padding
DEFAULT_MODE = "fast"
PRECISIONS = ("auto", "float32", "bfloat16")  # auto: bfloat16 on a GPU in fast mode
DEFAULT_PRECISION = "auto"
