"""Loading a model directory in the official layout, and its errors."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import Payload
from uceindex.errors import ModelFilesError, UnknownSpeciesError
from uceindex.model.files import ModelFiles
from uceindex.model.load import UCEModel
from uceindex.model.tiny import write_tiny_model


def test_vocabulary_follows_offsets_and_key_order(tiny_model, tiny_model_dir):
    vocab = tiny_model.vocab("mouse")
    with open(tiny_model_dir / "species_offsets.pkl", "rb") as f:
        offsets = pickle.load(f)
    keys = list(
        torch.load(
            tiny_model_dir
            / "protein_embeddings"
            / "Mus_musculus.GRCm39.gene_symbol_to_embedding_ESM2.pt"
        )
    )
    assert vocab.symbols[0] == keys[0].upper()
    assert vocab.token_rows[5] == offsets["mouse"] + 5
    # The token row holds that gene's protein embedding.
    table = tiny_model.network.pe_embedding.weight
    pt = torch.load(
        tiny_model_dir
        / "protein_embeddings"
        / "Mus_musculus.GRCm39.gene_symbol_to_embedding_ESM2.pt"
    )
    assert torch.equal(table[vocab.token_rows[5]], pt[keys[5]])


def test_chromosome_codes_are_categories_over_the_whole_file(tiny_model, tiny_model_dir):
    csv = pd.read_csv(tiny_model_dir / "species_chrom.csv")
    spec_chrom = pd.Categorical(csv["species"] + "_" + csv["chromosome"].astype(str))
    code_of = dict(zip(csv["species"] + ":" + csv["gene_symbol"], spec_chrom.codes.astype(int)))
    vocab = tiny_model.vocab("human")
    for i in [0, 17, 300]:
        assert (
            vocab.chrom_rows[i]
            == tiny_model.chrom_token_offset + code_of["human:" + vocab.symbols[i]]
        )
    # Chromosome rows are the reference's seed-23 draws.
    torch.manual_seed(23)
    chrom = torch.normal(
        mean=0, std=1, size=(len(spec_chrom.categories), tiny_model.config.token_dim)
    )
    assert torch.equal(
        tiny_model.network.pe_embedding.weight[tiny_model.chrom_token_offset :], chrom
    )


def test_symbols_are_case_insensitive(tiny_model):
    vocab = tiny_model.vocab("mouse")
    assert "GM7" in vocab.index and "Gm7" not in vocab.index


def test_unknown_species_lists_the_known_ones(tiny_model):
    with pytest.raises(UnknownSpeciesError, match="knows: human, mouse"):
        tiny_model.vocab("chicken")


def test_describe(tiny_model):
    info = tiny_model.describe()
    assert info["layers"] == 2 and info["species"] == {"human": 700, "mouse": 400}
    assert info["name"] == f"uce-2l-{tiny_model.fingerprint}"


def test_fingerprint_changes_with_the_weights(tmp_path, tiny_model):
    other = UCEModel(write_tiny_model(tmp_path / "m", {"human": ["A", "B"]}, seed=1))
    again = UCEModel(write_tiny_model(tmp_path / "m2", {"human": ["A", "B"]}, seed=1))
    assert other.fingerprint != tiny_model.fingerprint
    assert other.fingerprint == again.fingerprint


def _copy(src, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def test_missing_files_say_which_and_how_to_get_them(tmp_path, tiny_model_dir):
    with pytest.raises(ModelFilesError, match="no model directory .*models download"):
        ModelFiles.find(tmp_path / "nowhere")
    d = _copy(tiny_model_dir, tmp_path)
    (d / "species_offsets.pkl").unlink()
    with pytest.raises(ModelFilesError, match="species_offsets.pkl is missing"):
        UCEModel(d)
    (d / "4layer_model.torch").unlink()
    with pytest.raises(ModelFilesError, match="holds no checkpoint"):
        UCEModel(d)


def test_model_dir_from_environment(monkeypatch, tiny_model_dir):
    monkeypatch.setenv("UCEINDEX_MODEL_DIR", str(tiny_model_dir))
    assert UCEModel().fingerprint == UCEModel(tiny_model_dir).fingerprint


def test_checkpoint_that_does_not_match_the_token_table(tmp_path, tiny_model_dir):
    d = _copy(tiny_model_dir, tmp_path)
    torch.save(torch.zeros(10, 64), d / "all_tokens.torch")
    with pytest.raises(ModelFilesError, match="different releases"):
        UCEModel(d)


def test_corrupt_checkpoint(tmp_path, tiny_model_dir):
    d = _copy(tiny_model_dir, tmp_path)
    data = (d / "4layer_model.torch").read_bytes()
    (d / "4layer_model.torch").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFilesError, match="cannot read 4layer_model.torch"):
        UCEModel(d)


def test_extra_species_from_the_new_species_csv(tmp_path, tiny_model_dir, tiny_model):
    d = _copy(tiny_model_dir, tmp_path)
    gen = torch.Generator().manual_seed(5)
    genes = {f"cg{i}": torch.randn(32, generator=gen) for i in range(30)}
    torch.save(genes, d / "chicken.pt")
    pd.DataFrame(
        {
            "gene_symbol": list(genes),
            "chromosome": ["1", "2", "Z"] * 10,
            "start": np.arange(30) * 100,
        }
    ).to_csv(d / "chicken_chrom.csv", index=False)
    pd.DataFrame(
        {
            "species": ["chicken"],
            "path": ["chicken.pt"],
            "chrom_csv": ["chicken_chrom.csv"],
            "taxonomy_id": [9031],
        }
    ).to_csv(d / "new_species_protein_embeddings.csv", index=False)
    model = UCEModel(d)
    assert model.species == ["human", "mouse", "chicken"]
    vocab = model.vocab("chicken")
    table = model.network.pe_embedding.weight
    n = tiny_model.config.n_tokens
    assert vocab.token_rows[0] == n and torch.equal(table[n + 3], genes["cg3"])
    torch.manual_seed(9031)
    chrom = torch.normal(0, 1, (3, 32))
    assert torch.equal(table[n + 30 :], chrom)
    assert set(vocab.chrom_rows.tolist()) == {n + 30, n + 31, n + 32}
    # The official species are untouched.
    assert torch.equal(table[:n], tiny_model.network.pe_embedding.weight)


@pytest.mark.parametrize(
    "content, match",
    [
        ("payload", "names io.open"),
        ({"human": 4, "mouse": np.int64(9)}, "names numpy"),
        ({"human": "4"}, "must map species names to row numbers"),
        (["human", 4], "must map species names to row numbers"),
    ],
    ids=["code", "numpy-int", "string-row", "not-a-dict"],
)
def test_species_offsets_run_nothing_and_hold_only_names_and_rows(
    tmp_path, tiny_model_dir, content, match
):
    d = _copy(tiny_model_dir, tmp_path)
    marker = tmp_path / "ran"
    content = {"human": Payload(marker)} if content == "payload" else content
    (d / "species_offsets.pkl").write_bytes(pickle.dumps(content))
    with pytest.raises(ModelFilesError, match=match) as err:
        UCEModel(d)
    assert "\n" not in str(err.value)
    assert not marker.exists()  # the crafted pickle did not run
    with open(tiny_model_dir / "species_offsets.pkl", "rb") as f:  # the plain pickle of the
        assert isinstance(pickle.load(f), dict)  # tiny model (as the official file) still loads


def _add_chicken(d, genes):
    """A species added beside the official files (as `species add` lists it)."""
    torch.save(genes, d / "chicken.pt")
    pd.DataFrame(
        {"gene_symbol": list(genes), "chromosome": "1", "start": np.arange(len(genes)) * 100}
    ).to_csv(d / "chicken_chrom.csv", index=False)
    pd.DataFrame(
        {
            "species": ["chicken"],
            "path": ["chicken.pt"],
            "chrom_csv": ["chicken_chrom.csv"],
            "taxonomy_id": [9031],
        }
    ).to_csv(d / "new_species_protein_embeddings.csv", index=False)


@pytest.mark.parametrize(
    "name, species",
    [
        ("4layer_model.torch", None),
        ("all_tokens.torch", None),
        ("protein_embeddings/Homo_sapiens.GRCh38.gene_symbol_to_embedding_ESM2.pt", "human"),
        ("chicken.pt", "chicken"),
    ],
    ids=["checkpoint", "token-table", "protein-embeddings", "added-species"],
)
def test_a_crafted_torch_file_is_refused_in_one_line_not_run(
    tmp_path, tiny_model_dir, monkeypatch, name, species
):
    d = _copy(tiny_model_dir, tmp_path)
    _add_chicken(d, {f"cg{i}": torch.zeros(32) for i in range(3)})
    marker = tmp_path / "ran"
    torch.save({"x": Payload(marker)}, d / name)
    # weights_only=True is explicit, so this variable (which lifts torch's default) cannot lift it
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(ModelFilesError, match=f"cannot read {Path(name).name}") as err:
        model = UCEModel(d)
        model.vocab(species)
    assert "\n" not in str(err.value) and "io.open" in str(err.value)
    assert not marker.exists()
