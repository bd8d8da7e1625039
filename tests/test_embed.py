"""uceindex.embed on AnnData: results, rejects, determinism, and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import uceindex
from uceindex.errors import InputDataError, UnknownSpeciesError


def test_embeds_every_cell_with_unit_rows(small_pbmc, tiny_model):
    out = uceindex.embed(small_pbmc, "human", model=tiny_model)
    assert out.shape == (60, 16) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert small_pbmc.obsm["X_uce"] is out
    info = small_pbmc.uns["uce"]
    assert info["embedded"] == 60 and info["model"] == tiny_model.name
    assert info["genes"]["genes_matched"] == 700 and info["genes"]["genes_in_file"] == 765


def test_same_seed_same_embeddings_whatever_the_neighbours(pbmc, tiny_model):
    whole = uceindex.embed(pbmc[:100].copy(), "human", model=tiny_model, seed=3)
    part = uceindex.embed(pbmc[40:70].copy(), "human", model=tiny_model, seed=3)
    assert np.abs(whole[40:70] - part).max() < 1e-5
    other_seed = uceindex.embed(pbmc[40:70].copy(), "human", model=tiny_model, seed=4)
    assert np.abs(other_seed - part).max() > 1e-4


def test_reference_mode_stays_close_to_fast_mode(small_pbmc, tiny_model):
    fast = uceindex.embed(small_pbmc.copy(), "human", model=tiny_model)
    ref = uceindex.embed(small_pbmc, "human", model=tiny_model, mode="reference")
    cos = (fast * ref).sum(axis=1)
    assert cos.min() > 0.99


def test_cells_that_cannot_be_embedded_get_nan_and_a_reason(small_pbmc, tiny_model):
    X = small_pbmc.X.tolil()
    X[3, :] = 0  # no counts at all
    X[7, :] = 0
    X[7, :10] = 1  # 10 genes: under the QC threshold
    small_pbmc.X = sp.csr_matrix(X)
    out = uceindex.embed(small_pbmc, "human", model=tiny_model)
    reasons = small_pbmc.obs["uce_reject_reason"]
    assert np.isnan(out[3]).all() and np.isnan(out[7]).all()
    assert reasons.iloc[3] == "no counts in genes the model knows"
    assert reasons.iloc[7] == "fewer than 25 expressed genes the model knows"
    assert reasons.drop(reasons.index[[3, 7]]).isna().all()
    assert small_pbmc.uns["uce"]["rejected"] == 2


def test_counts_found_in_layers_or_raw(small_pbmc, tiny_model):
    expected = uceindex.embed(small_pbmc.copy(), "human", model=tiny_model)
    a = small_pbmc.copy()
    a.layers["counts"] = a.X.copy()
    a.X = a.X.multiply(1 / a.X.sum(axis=1)).tocsr() * 1e4
    a.X.data = np.log1p(a.X.data)
    out = uceindex.embed(a, "human", model=tiny_model)
    assert a.uns["uce"]["counts_from"] == "layers['counts']"
    assert np.abs(out - expected).max() < 1e-5


def test_normalised_values_are_refused(small_pbmc, tiny_model):
    small_pbmc.X = small_pbmc.X.astype(np.float32) / 3.7
    with pytest.raises(InputDataError, match="no raw counts found .*non-integer"):
        uceindex.embed(small_pbmc, "human", model=tiny_model)


@pytest.mark.parametrize("bad,match", [(np.nan, "NaN"), (-2.0, "negative")])
def test_nan_and_negative_values_are_refused(small_pbmc, tiny_model, bad, match):
    X = small_pbmc.X.astype(np.float32).tocsr()
    X.data[5] = bad
    small_pbmc.X = X
    with pytest.raises(InputDataError, match=match):
        uceindex.embed(small_pbmc, "human", model=tiny_model)
    assert "X_uce" not in small_pbmc.obsm


def test_ensembl_ids_without_symbols(small_pbmc, tiny_model):
    small_pbmc.var_names = [f"ENSG{i:011d}" for i in range(small_pbmc.n_vars)]
    with pytest.raises(InputDataError, match="Ensembl ids .*feature_name"):
        uceindex.embed(small_pbmc, "human", model=tiny_model)


def test_cellxgene_feature_name_with_duplicates_is_summed(small_pbmc, tiny_model):
    expected = uceindex.embed(small_pbmc.copy(), "human", model=tiny_model)
    a = small_pbmc.copy()
    symbols = list(a.var_names)
    # Split gene 0 into two columns with the same symbol: counts are summed back.
    X = a.X.toarray()
    half = X[:, 0] // 2
    X = np.hstack([X, (X[:, 0] - half)[:, None]])
    X[:, 0] = half
    var = pd.DataFrame(
        {"feature_name": symbols + [symbols[0]]},
        index=[f"ENSG{i:011d}" for i in range(len(symbols) + 1)],
    )
    import anndata as ad

    b = ad.AnnData(X=sp.csr_matrix(X), obs=a.obs, var=var)
    out = uceindex.embed(b, "human", model=tiny_model)
    assert b.uns["uce"]["genes"]["symbols_from"] == "var['feature_name']"
    assert np.abs(out - expected).max() < 1e-5


def test_genes_of_another_species_are_refused(small_pbmc, tiny_model):
    with pytest.raises(InputDataError, match=r"only 0 of 765 genes .*mouse.*check --species"):
        uceindex.embed(small_pbmc, "mouse", model=tiny_model)


def test_unknown_species(small_pbmc, tiny_model):
    with pytest.raises(UnknownSpeciesError, match="unknown species 'axolotl'"):
        uceindex.embed(small_pbmc, "axolotl", model=tiny_model)


def test_progress_is_reported(small_pbmc, tiny_model):
    seen = []
    uceindex.embed(small_pbmc, "human", model=tiny_model, progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 60) and seen[-1] == (60, 60)
