"""Write a small random UCE model directory in the official file formats.

Tests and the demo use it: the official weights are gigabytes and cannot be fetched here.
Every file has the official name, type and layout (docs/uce.md §1), only the sizes are
small, so the loader, the reference code and uceindex read it exactly as the real thing.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pandas as pd
import torch

from uceindex.model.files import (
    CHECKPOINTS,
    PROTEIN_EMBEDDINGS_DIR,
    SETTINGS_FILE,
    protein_embedding_file,
)
from uceindex.model.network import UCE, UCEConfig
from uceindex.model.vocab import CHROM_SEED, N_SPECIAL

CHROMOSOMES = ["1", "2", "3", "4", "5", "X"]


def tiny_config(**sizes) -> UCEConfig:
    """Small sizes; the decoder heads keep the reference's hard-coded widths so that the
    reference `TransformerModel` can load the same file."""
    base = dict(token_dim=32, d_model=16, nhead=2, d_hid=32, nlayers=2, output_dim=16, max_len=1536)
    base.update(sizes)
    out = base["output_dim"]
    return UCEConfig(
        **base,
        decoder_widths=(1024, out, out, out),
        binary_widths=(2048, 512, 128, 1),
        binary_in=out + 1280,
        n_tokens=0,  # set once the token table is known
    )


def _position(species: str, symbol: str) -> tuple[str, int]:
    """A fixed, made-up chromosome and start for a gene (the real ones come with the release)."""
    digest = hashlib.sha256(f"{species}:{symbol}".encode()).digest()
    return CHROMOSOMES[digest[0] % len(CHROMOSOMES)], int.from_bytes(
        digest[1:5], "little"
    ) % 200_000_000


def write_tiny_model(
    root: str | Path,
    genes: dict[str, list[str]],
    *,
    checkpoint: str = "4layer",
    seed: int = 0,
    **sizes,
) -> Path:
    """Write a model directory with the given species -> gene symbols; returns its path."""
    root = Path(root)
    (root / PROTEIN_EMBEDDINGS_DIR).mkdir(parents=True, exist_ok=True)
    config = tiny_config(**sizes)
    gen = torch.Generator().manual_seed(seed)

    rows = [torch.randn(N_SPECIAL, config.token_dim, generator=gen)]
    offsets, chrom_rows = {}, []
    for species, symbols in genes.items():
        offsets[species] = N_SPECIAL + sum(r.shape[0] for r in rows[1:])
        embeddings = {s: torch.randn(config.token_dim, generator=gen) for s in symbols}
        torch.save(embeddings, root / PROTEIN_EMBEDDINGS_DIR / protein_embedding_file(species))
        rows.append(torch.stack(list(embeddings.values())))
        for s in symbols:
            chrom, start = _position(species, s)
            chrom_rows.append((species, s.upper(), chrom, start, start + 1000))
    all_tokens = torch.cat(rows)
    torch.save(all_tokens, root / "all_tokens.torch")
    chrom_table = pd.DataFrame(
        chrom_rows, columns=["species", "gene_symbol", "chromosome", "start", "end"]
    )
    chrom_table.to_csv(root / "species_chrom.csv", index=False)
    with open(root / "species_offsets.pkl", "wb") as f:
        pickle.dump(offsets, f)

    # The checkpoint's table: all_tokens then the chromosome tokens, drawn as the reference draws them.
    n_chrom = (chrom_table["species"] + "_" + chrom_table["chromosome"]).nunique()
    torch.manual_seed(CHROM_SEED)
    chrom_tokens = torch.normal(mean=0, std=1, size=(n_chrom, config.token_dim))
    table = torch.cat([all_tokens, chrom_tokens])
    torch.manual_seed(seed)
    model = UCE(UCEConfig(**{**config.__dict__, "n_tokens": table.shape[0]}))
    state = model.state_dict()
    state["pe_embedding.weight"] = table
    torch.save(state, root / CHECKPOINTS[checkpoint][0])
    (root / SETTINGS_FILE).write_text(json.dumps({"nhead": config.nhead}) + "\n")
    return root
