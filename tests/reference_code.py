"""The reference implementation (`uce-model` on PyPI), imported for comparisons.

Its `uce/__init__.py` imports scanpy and gdown, which a GPU machine may not have; the modules
compared against (`uce.model`, `uce.eval_data`) need neither, so they are imported here without
running the package's `__init__`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def reference_module(name: str) -> types.ModuleType:
    """`uce.<name>` (e.g. "model", "eval_data") with `uce/__init__.py` left unrun."""
    if "uce" not in sys.modules:
        spec = importlib.util.find_spec("uce")  # finds the package without executing it
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("the reference package is not installed: pip install uce-model")
        package = types.ModuleType("uce")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["uce"] = package
    return importlib.import_module(f"uce.{name}")


# -- the official pipeline's embeddings, for the gene-filter comparison -----------------------

OFFICIAL_4LAYER = dict(
    token_dim=5120, d_model=1280, nhead=20, d_hid=5120, nlayers=4, output_dim=1280
)


def human_like_counts(n_cells: int, n_genes: int, seed: int = 0):
    """An AnnData of raw counts whose genes span rare to common (lognormal detection rates,
    ~190 of 3,000 genes per cell), so that the reference's filter_genes(min_cells=10) drops
    about a fifth of a cell's genes: genes G0..G{n-1}, float32 CSR counts 1 + negative binomial."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    rate = np.minimum(0.9, rng.lognormal(-3.2, 1.0, n_genes))
    on = rng.random((n_cells, n_genes)) < rate * rng.uniform(0.6, 1.4, (n_cells, 1))
    rows, cols = np.nonzero(on)
    values = 1 + rng.negative_binomial(0.5, 0.5 / (0.5 + 0.2 + 30 * rate[cols] ** 2))
    X = sp.csr_matrix((values.astype(np.float32), (rows, cols)), shape=on.shape)
    var = pd.DataFrame(index=[f"G{i}" for i in range(n_genes)])
    return ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]), var=var)


def official_embeddings(adata, model, species: str, *, seeds=(0,), n_cells: int):
    """The official pipeline on `adata` with a `UCEModel`'s weights: scanpy's
    filter_genes(min_cells=10) then filter_cells(min_genes=25) over the whole file, the
    vocabulary subset, numpy's global generator seeded once and
    `uce.eval_data.sample_cell_sentences` cell after cell, and `uce.model.TransformerModel`
    (float mask; one cell a batch, so that no padding moves an embedding) on the first
    `n_cells` cells that survive, once per seed.

    Returns (obs names of those cells, {seed: embeddings (n_cells, output_dim)}). Token
    rows, chromosomes and starts come from uceindex's reading of the model directory
    (tested against the files elsewhere)."""
    import types

    import numpy as np
    import pandas as pd
    import scanpy as sc
    import torch

    from uceindex.model.vocab import CHROM_RIGHT, CLS, PAD

    config, vocab = model.config, model.vocab(species)
    a = adata.copy()
    sc.pp.filter_genes(a, min_cells=10)
    sc.pp.filter_cells(a, min_genes=25)
    position = vocab.index  # symbol -> vocabulary entry
    a = a[:, [s in position for s in a.var_names.str.upper()]]
    entry = np.array([position[s] for s in a.var_names.str.upper()])
    a = a[:n_cells]
    args = types.SimpleNamespace(
        pad_length=config.max_len,
        sample_size=1024,
        cls_token_idx=CLS,
        CHROM_TOKEN_OFFSET=0,  # the chromosome "codes" below are already token rows
        chrom_token_right_idx=CHROM_RIGHT,
        pad_token_idx=PAD,
    )
    maps = dict(
        dataset_to_protein_embeddings={"d": torch.tensor(vocab.token_rows[entry])},
        dataset_to_chroms={"d": pd.Series(vocab.chrom_rows[entry], index=a.var_names)},
        dataset_to_starts={"d": vocab.starts[entry]},
    )
    sample = reference_module("eval_data").sample_cell_sentences
    ref = reference_network(config, model.network.state_dict())
    dense = torch.tensor(np.asarray(a.X.todense()), dtype=torch.int64)  # as its memmap holds them
    out = {}
    for seed in seeds:
        np.random.seed(seed)
        rows = []
        for counts in dense.split(1):
            weights = torch.log1p(counts) / torch.log1p(counts).sum()
            tokens, mask, _, _ = sample(counts, weights, "d", args, **maps)
            width = int(mask.sum())
            with torch.inference_mode():
                x = torch.nn.functional.normalize(ref.pe_embedding(tokens[:, :width].t()), dim=2)
                rows.append(ref(x, mask[:, :width])[1])
        out[seed] = torch.cat(rows).numpy()
    return a.obs_names.to_numpy(), out


def reference_network(config, state: dict):
    """The reference's `TransformerModel` at `config`'s sizes with `state` loaded strictly."""
    import torch

    ref = reference_module("model").TransformerModel(
        config.token_dim,
        config.d_model,
        config.nhead,
        config.d_hid,
        config.nlayers,
        config.output_dim,
    )
    ref.pe_embedding = torch.nn.Embedding.from_pretrained(
        torch.zeros(config.n_tokens, config.token_dim)
    )
    ref.load_state_dict(state, strict=True)
    return ref.eval()
