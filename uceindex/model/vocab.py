"""The model's vocabulary without torch: the special token rows and a species' genes.

io and sentences read these; importing them must not load torch (the CLI's --help and the
layers below the model stay light).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

PAD, CHROM_LEFT, CHROM_RIGHT, CLS = 0, 1, 2, 3  # special token rows
N_SPECIAL = 4  # rows of the token table before the first gene
CHROM_SEED = 23  # torch.manual_seed used for the official chromosome tokens


@dataclass(frozen=True)
class SpeciesVocab:
    """A species' genes as the model sees them; arrays are aligned, one entry per gene."""

    name: str
    symbols: np.ndarray  # upper-case gene symbols (object)
    token_rows: np.ndarray  # int64 row in the token table
    chrom_rows: np.ndarray  # int64 token row of the gene's chromosome
    starts: np.ndarray  # int64 genomic start

    @cached_property
    def index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)
