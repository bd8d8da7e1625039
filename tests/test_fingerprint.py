"""A store knows its model: the fingerprint covers every file the embeddings depend on, so
cells from a model directory whose files differ from those that made the store are refused in
one line; and the store remembers that directory for its queries."""

from __future__ import annotations

import shutil
import time

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import MOUSE_GENES
from uceindex.errors import QueryError, StoreError
from uceindex.ingestion import ingest
from uceindex.model import digest
from uceindex.model.load import UCEModel
from uceindex.model.tiny import write_tiny_model
from uceindex.search import annotate
from uceindex.store import Store

runner = CliRunner()
HUMAN_PT = "protein_embeddings/Homo_sapiens.GRCh38.gene_symbol_to_embedding_ESM2.pt"
MOUSE_PT = "protein_embeddings/Mus_musculus.GRCm39.gene_symbol_to_embedding_ESM2.pt"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def model_dir(tmp_path, tiny_model_dir):
    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    return d


@pytest.fixture
def other_model(tmp_path, pbmc_genes):
    """Another model of the same widths and gene lists: only its random values differ."""
    return write_tiny_model(
        tmp_path / "other", {"human": pbmc_genes[:700], "mouse": MOUSE_GENES}, seed=1
    )


def _swap(d, name, source):
    time.sleep(0.01)  # a new ctime even on coarse clocks
    shutil.copy2(source, d / name)  # copy2 keeps the mtime: the digest must not trust it


@pytest.mark.parametrize(
    "name", ["4layer_model.torch", "all_tokens.torch", "species_chrom.csv", "species_offsets.pkl"]
)
def test_the_fingerprint_changes_with_every_file_it_covers(model_dir, other_model, name):
    before = UCEModel(model_dir)
    _swap(model_dir, name, other_model / name)
    if name == "species_offsets.pkl":  # the other model has the same offsets: write new ones
        import pickle

        (model_dir / name).write_bytes(pickle.dumps({"human": 4, "mouse": 704, "pig": 2000}))
    if name == "species_chrom.csv":
        text = (model_dir / name).read_text().replace(",1,", ",2,", 1)
        (model_dir / name).write_text(text)
    assert UCEModel(model_dir).fingerprint != before.fingerprint


def test_a_species_vocabulary_has_its_own_fingerprint(model_dir):
    before = UCEModel(model_dir)
    human, mouse = before.vocabulary_fingerprint("human"), before.vocabulary_fingerprint("mouse")
    assert human != mouse and before.vocabulary_fingerprint("human") == human
    _swap(model_dir, HUMAN_PT, model_dir / MOUSE_PT)  # another species' file in human's place
    after = UCEModel(model_dir)
    assert after.fingerprint == before.fingerprint  # the shared files are the same
    assert after.vocabulary_fingerprint("human") != human
    assert after.vocabulary_fingerprint("mouse") == mouse


def test_digests_are_remembered_per_file_version(model_dir, monkeypatch):
    first = UCEModel(model_dir).fingerprint
    hashed = []
    real = digest.hashlib.file_digest
    monkeypatch.setattr(digest, "_known", {})  # a new process: only the cache file is left
    monkeypatch.setattr(
        digest.hashlib, "file_digest", lambda f, name: hashed.append(f.name) or real(f, name)
    )
    assert UCEModel(model_dir).fingerprint == first and hashed == []
    (model_dir / "species_chrom.csv").touch()
    assert UCEModel(model_dir).fingerprint == first and len(hashed) == 1


def _files(tmp_path, small_pbmc):
    """Two files of 30 PBMCs (the first ingested, the second refused)."""
    paths = []
    for name, cells in (("first", slice(0, 30)), ("second", slice(30, 60))):
        paths.append(tmp_path / f"{name}.h5ad")
        small_pbmc[cells].copy().write_h5ad(paths[-1])
    return paths


def _refused(uri, second, model_dir, small_pbmc, match):
    with pytest.raises(StoreError, match=match) as ingest_error:
        ingest(second, species="human", store=uri, model_dir=model_dir)
    with pytest.raises(QueryError, match=match) as query_error:
        annotate(uri, small_pbmc[:5].copy(), k=10, species="human", model_dir=model_dir)
    for err in (ingest_error, query_error):
        assert "\n" not in str(err.value)
    with Store.open(uri) as store:
        assert store.datasets()["dataset_id"].tolist() == ["first"]  # nothing was added
    return str(ingest_error.value)


def test_another_models_token_table_is_refused(tmp_path, model_dir, other_model, small_pbmc):
    first, second = _files(tmp_path, small_pbmc)
    ingest(first, species="human", store=tmp_path / "atlas", model_dir=model_dir)
    _swap(model_dir, "all_tokens.torch", other_model / "all_tokens.torch")
    _refused(tmp_path / "atlas", second, model_dir, small_pbmc, "fingerprint")


def test_another_protein_embedding_file_is_refused(tmp_path, model_dir, small_pbmc):
    first, second = _files(tmp_path, small_pbmc)
    uri = tmp_path / "atlas"
    ingest(first, species="human", store=uri, model_dir=model_dir)
    # The same genes in another order: each gene reads another token row.
    human = torch.load(model_dir / HUMAN_PT)
    torch.save(dict(reversed(list(human.items()))), model_dir / HUMAN_PT)
    _refused(
        uri, second, model_dir, small_pbmc, "fingerprint mismatch: the store's human data sets"
    )


def test_a_store_of_the_old_fingerprint_says_how_to_proceed(tmp_path, model_dir, small_pbmc):
    """An earlier uceindex bound stores to a sample of the checkpoint alone."""
    first, second = _files(tmp_path, small_pbmc)
    old = UCEModel(model_dir)
    old.fingerprint = old.legacy_fingerprint  # as the earlier version named this model
    uri = tmp_path / "atlas"
    ingest(first, species="human", store=uri, model=old)
    text = _refused(uri, second, model_dir, small_pbmc, "made by an earlier uceindex.*new --store")
    assert UCEModel(model_dir).fingerprint in text and old.legacy_fingerprint in text


# -- the store remembers where its model is ------------------------------------------------------


def test_query_uses_the_model_directory_the_store_remembers(
    tmp_path, model_dir, other_model, small_pbmc, monkeypatch
):
    first, _ = _files(tmp_path, small_pbmc)
    uri = tmp_path / "atlas"
    ingest(first, species="human", store=uri, model_dir=model_dir)
    with Store.open(uri) as store:
        assert store.model_dir() == str(model_dir.resolve())
    monkeypatch.setenv("UCEINDEX_MODEL_DIR", str(other_model))  # the store's own comes first
    query = small_pbmc[:5].copy()
    query.obs["organism"] = "Homo sapiens"  # the species, as ingest reads it
    frame = annotate(uri, query, k=10)
    assert len(frame) == 5 and frame["predicted"].notna().all()
    result = runner.invoke(
        app, ["query", str(first), "--species", "human", "--store", str(uri), "--k", "10"]
    )
    assert result.exit_code == 0, result.output  # no --model-dir
    _swap(model_dir, "all_tokens.torch", other_model / "all_tokens.torch")
    with pytest.raises(QueryError, match=f"the store's model directory {model_dir.resolve()} now"):
        annotate(uri, query, k=10)
    shutil.rmtree(model_dir)
    gone = runner.invoke(
        app, ["query", str(first), "--species", "human", "--store", str(uri), "--k", "10"]
    )
    assert gone.exit_code == 1 and "is gone: pass the directory" in gone.output
    assert "--model-dir" in gone.output and len(gone.output.strip().splitlines()) == 1
