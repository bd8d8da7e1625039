"""New species: Ensembl FASTA parsing, ESM-2 gene embeddings, registration, end to end.

The ESM-2 here is a small random one built from fair-esm's own classes and saved in the
format of the published weights, so `load_model_and_alphabet_local` reads it as the real
file; the UCE checkpoint is a tiny one whose token width equals that ESM's width.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json

import anndata as ad
import esm
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import Payload
from uceindex.errors import InputDataError, ModelFilesError
from uceindex.model.load import UCEModel
from uceindex.model.tiny import write_tiny_model
from uceindex.species.esm import ProteinCache, embed_proteins, gene_embeddings, load_esm
from uceindex.species.fasta import parse_header, parse_location, read_proteome
from uceindex.species.register import gene_tokens, list_species, register_species

runner = CliRunner()
WIDTH = 32  # ESM embed_dim == the tiny UCE checkpoint's token_dim
AA = "ACDEFGHIKLMNPQRSTVWY"


def _save_esm2(path, embed_dim: int, seed: int = 0):
    """A random ESM-2 saved as fair-esm publishes them: {"model": prefixed state, "cfg": ...}
    without the contact-regression weights, which live in their own file."""
    torch.manual_seed(seed)
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    model = esm.model.esm2.ESM2(
        num_layers=2, embed_dim=embed_dim, attention_heads=2, alphabet=alphabet
    )
    state = model.state_dict()
    regression = {k: v for k, v in state.items() if k.startswith("contact_head.regression")}
    body = {
        "encoder.sentence_encoder." + k: v
        for k, v in state.items()
        if not k.startswith("contact_head.regression")
    }
    cfg = argparse.Namespace(
        encoder_layers=2,
        encoder_embed_dim=embed_dim,
        encoder_attention_heads=2,
        token_dropout=True,
    )
    torch.save({"model": body, "cfg": {"model": cfg}}, path)
    torch.save({"model": regression}, path.with_name(path.stem + "-contact-regression.pt"))
    return path


@pytest.fixture(scope="module")
def esm_weights(tmp_path_factory):
    return _save_esm2(tmp_path_factory.mktemp("esm") / "esm2_t2_32_tiny.pt", WIDTH)


@pytest.fixture(scope="module")
def esm_model(esm_weights):
    return load_esm(esm_weights, device="cpu")


@pytest.fixture
def model_dir(tmp_path):
    return write_tiny_model(tmp_path / "model", {"human": [f"H{i}" for i in range(30)]})


def _header(pid, symbol=None, location="chromosome:GRCg7b:1:100:200:1", description="x"):
    fields = [f">{pid}", "pep"]
    if location:
        fields.append(location)
    fields += [f"gene:{pid}G", f"transcript:{pid}T", "gene_biotype:protein_coding"]
    if symbol:
        fields.append(f"gene_symbol:{symbol}")
    fields.append(f"description:{description}")
    return " ".join(fields)


def _write_chicken_fasta(path, n_genes=40, seed=0):
    """Genes on 1, 2, Z, W (one via primary_assembly), 1-3 proteins each; one record without
    a symbol and one extra protein with a stop codon. Returns the gene symbols."""
    rng = np.random.default_rng(seed)
    lines, symbols = [], []
    for g in range(n_genes):
        symbol = "si:ch211-12e1.3" if g == 5 else f"G{g}"
        symbols.append(symbol)
        chrom = ["1", "2", "Z", "W"][g % 4]
        kind = "primary_assembly" if g == 9 else "chromosome"
        for k in range(1 + g % 3):
            start = 10_000 * g + 37 * k
            lines.append(
                _header(f"P{g}.{k}", symbol, f"{kind}:GRCg7b:{chrom}:{start}:{start + 500}:1")
            )
            lines.append("".join(rng.choice(list(AA), int(rng.integers(8, 31)))))
    lines += [_header("NOSYM.1"), "MKV", _header("STOP.1", "G0"), "MKV*LL"]
    path.write_text("\n".join(lines) + "\n")
    return symbols


def _hashes(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


# -- FASTA ---------------------------------------------------------------------------------


def test_header_fields_keep_colons_in_values_and_stop_at_the_description():
    pid, fields = parse_header(
        ">ENSDARP1.1 pep primary_assembly:GRCz11:5:77:99:-1 gene:ENSDARG1.2 "
        "gene_symbol:si:ch211-12e1.3 description:gene_symbol:FAKE with spaces [Source:ZFIN;Acc:ZDB:1]"
    )
    assert pid == "ENSDARP1.1"
    assert fields["gene_symbol"] == "si:ch211-12e1.3"
    assert fields["primary_assembly"] == "GRCz11:5:77:99:-1"
    assert parse_location(fields["primary_assembly"]) == ("5", 77)
    assert parse_location("GRCz11:5:oops") is None
    _, fields = parse_header(">P pep chromosome:A:1:1:2:1 description:gene_symbol:FAKE")
    assert "gene_symbol" not in fields


FASTA = "\n".join(
    [
        _header(
            "P1.1",
            "NEK7",
            "chromosome:GRCg7b:1:500:900:1",
            "NIMA related kinase 7 [Source:NCBI gene;Acc:395223]",
        ),
        "MKLAVV",
        "GGTT",  # a sequence spans lines
        _header("P1.2", "NEK7", "chromosome:GRCg7b:1:300:900:1"),
        "mkla",
        _header("P1.3", "NEK7", "chromosome:GRCg7b:1:400:900:-1"),
        "MKLW",
        _header("P7.1", "NEK7", "chromosome:GRCg7b:W:5:9:1"),  # other chromosome: no vote
        "MKLY",
        _header("P2.1", "si:ch211-12e1.3", "primary_assembly:GRCz11:5:77:99:1"),
        "MQQ",
        _header("P3.1", "SCAF1", "scaffold:GRCg7b:JAENSK010000484.1:10:20:1"),
        "MRR",
        _header("P4.1", None, "chromosome:GRCg7b:2:10:20:1", "gene_symbol:FAKE novel"),
        "MSS",
        _header("P5.1", "NOLOC", "supercontig:GRCg7b:KQ123:10:20:1"),
        "MTT",
        _header("P6.1", "STOPPY", "chromosome:GRCg7b:Z:50:60:1"),
        "MV*W",
        _header("P1.1", "NEK7", "chromosome:GRCg7b:1:1:2:1"),  # duplicate id
        "MWW",
        "",
    ]
)


def test_proteome_positions_and_skipped_proteins_are_counted(tmp_path):
    path = tmp_path / "x.pep.all.fa"
    path.write_text(FASTA)
    proteome = read_proteome(path)
    s = proteome.summary
    assert (s.proteins, s.no_symbol, s.no_chromosome, s.stop_codon, s.duplicate_id) == (
        10,
        1,
        1,
        1,
        1,
    )
    assert (s.genes, s.chromosomes) == (4, 4)
    pos = proteome.positions.set_index("gene_symbol")
    # Chromosome of the first located protein, lowest start of the gene's proteins on it.
    assert (pos.loc["NEK7", "chromosome"], pos.loc["NEK7", "start"]) == ("1", 300)
    assert (pos.loc["si:ch211-12e1.3", "chromosome"], pos.loc["si:ch211-12e1.3", "start"]) == (
        "5",
        77,
    )
    assert pos.loc["SCAF1", "chromosome"] == "JAENSK010000484.1"
    assert "NOLOC" not in pos.index and "FAKE" not in pos.index
    genes = proteome.gene_proteins()
    assert list(genes) == [
        "NEK7",
        "SCAF1",
        "si:ch211-12e1.3",
    ]  # sorted; STOPPY has no clean protein
    assert genes["NEK7"] == ["P1.1", "P1.2", "P1.3", "P7.1"]
    assert proteome.sequences()["P1.1"] == "MKLAVVGGTT" and proteome.sequences()["P1.2"] == "MKLA"
    gz = tmp_path / "x.pep.all.fa.gz"
    gz.write_bytes(gzip.compress(FASTA.encode()))
    assert read_proteome(gz).summary == s


def test_not_a_fasta(tmp_path):
    path = tmp_path / "x.fa"
    path.write_text("hello\n")
    with pytest.raises(InputDataError, match="not a FASTA"):
        read_proteome(path)
    with pytest.raises(InputDataError, match="no proteome"):
        read_proteome(tmp_path / "missing.fa")


# -- ESM -----------------------------------------------------------------------------------


def test_our_loader_and_fair_esms_own_loader_build_the_same_model(esm_weights, esm_model):
    with torch.serialization.safe_globals([argparse.Namespace]):
        reference, alphabet = esm.pretrained.load_model_and_alphabet_local(str(esm_weights))
    model, _ = esm_model
    _, _, tokens = alphabet.get_batch_converter()([("a", "MKTAYIAKQR")])
    with torch.inference_mode():
        ours = model(tokens, repr_layers=[2])["representations"][2]
        theirs = reference.eval()(tokens, repr_layers=[2])["representations"][2]
    assert torch.equal(ours, theirs)


def test_protein_embedding_is_the_mean_over_residues_whatever_the_batch(esm_model):
    model, alphabet = esm_model
    rng = np.random.default_rng(1)
    seqs = {
        f"p{i}": "".join(rng.choice(list(AA), int(n)))
        for i, n in enumerate(rng.integers(5, 40, 12))
    }
    one_batch, stats = embed_proteins(seqs, model, alphabet, tokens_per_batch=10**6)
    small, _ = embed_proteins(seqs, model, alphabet, tokens_per_batch=50)
    assert stats.computed == 12 and stats.from_cache == 0 and stats.truncated == 0
    convert = alphabet.get_batch_converter()
    with torch.inference_mode():
        for pid, seq in seqs.items():
            _, _, tokens = convert([(pid, seq)])  # alone: no padding; BOS and EOS left out below
            rep = model(tokens, repr_layers=[2])["representations"][2]
            expected = rep[0, 1 : len(seq) + 1].mean(0)
            assert torch.allclose(one_batch[pid], expected, atol=1e-5)
            assert torch.allclose(small[pid], expected, atol=1e-5)
            assert one_batch[pid].dtype == torch.float32 and one_batch[pid].shape == (WIDTH,)


def test_long_proteins_are_truncated_to_max_residues(esm_model):
    model, alphabet = esm_model
    long = "".join(np.random.default_rng(2).choice(list(AA), 30))
    out, stats = embed_proteins({"long": long, "head": long[:12]}, model, alphabet, max_residues=12)
    assert stats.truncated == 1
    assert torch.allclose(out["long"], out["head"], atol=1e-6)
    full, _ = embed_proteins({"long": long}, model, alphabet)
    assert not torch.allclose(full["long"], out["long"], atol=1e-3)


def test_an_interrupted_run_resumes_from_its_cache(tmp_path, esm_model):
    model, alphabet = esm_model
    rng = np.random.default_rng(3)
    seqs = {
        f"p{i}": "".join(rng.choice(list(AA), int(n)))
        for i, n in enumerate(rng.integers(8, 30, 20))
    }
    full, _ = embed_proteins(seqs, model, alphabet, tokens_per_batch=64)
    meta = {"weights": "w.pt", "weights_bytes": 1, "width": WIDTH, "max_residues": 1022}

    def stop_early(done, total):
        if done >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # buffered proteins are flushed on the way out
        embed_proteins(
            seqs,
            model,
            alphabet,
            tokens_per_batch=64,
            flush_every=1000,
            cache=ProteinCache(tmp_path / "cache", meta),
            progress=stop_early,
        )
    n_cached = len(ProteinCache(tmp_path / "cache", meta).load())
    assert 6 <= n_cached < 20
    again, stats = embed_proteins(
        seqs,
        model,
        alphabet,
        tokens_per_batch=64,
        flush_every=1,
        cache=ProteinCache(tmp_path / "cache", meta),
    )
    assert (stats.from_cache, stats.computed) == (n_cached, 20 - n_cached)
    assert all(torch.allclose(again[p], full[p], atol=1e-6) for p in seqs)
    _, stats = embed_proteins(seqs, model, alphabet, cache=ProteinCache(tmp_path / "cache", meta))
    assert (stats.from_cache, stats.computed) == (20, 0)
    with pytest.raises(InputDataError, match="delete that folder"):
        ProteinCache(tmp_path / "cache", {**meta, "max_residues": 100}).load()


def test_gene_embedding_is_the_mean_of_its_proteins():
    proteins = {"a": torch.ones(4), "b": torch.zeros(4), "c": torch.full((4,), 3.0)}
    genes = gene_embeddings({"Y": ["c"], "X": ["a", "b", "missing"], "Z": ["missing"]}, proteins)
    assert list(genes) == ["Y", "X"]
    assert torch.equal(genes["X"], torch.full((4,), 0.5))


def test_esm_width_must_match_the_checkpoint(tmp_path, model_dir):
    weights = _save_esm2(tmp_path / "esm2_t2_16_tiny.pt", 16)
    with pytest.raises(ModelFilesError, match="ESM-2 15B"):
        load_esm(weights, expect_width=WIDTH)
    fasta = tmp_path / "c.fa"
    _write_chicken_fasta(fasta)
    before = _hashes(model_dir)
    result = _add(model_dir, fasta, "--esm-weights", str(weights))
    assert result.exit_code == 1
    assert "16-d" in result.stderr and "32-d" in result.stderr and "5120" in result.stderr
    assert _hashes(model_dir) == before  # nothing written


# -- registration, end to end --------------------------------------------------------------


def _add(model_dir, fasta, *extra):
    return runner.invoke(
        app,
        [
            "species",
            "add",
            "chicken",
            "--proteome",
            str(fasta),
            "--taxonomy-id",
            "9031",
            "--model-dir",
            str(model_dir),
            *extra,
        ],
    )


def test_add_list_and_embed_a_new_species(tmp_path, model_dir, esm_weights, esm_model):
    fasta = tmp_path / "Gallus_gallus.GRCg7b.pep.all.fa"
    symbols = _write_chicken_fasta(fasta)
    official = _hashes(model_dir)

    result = _add(model_dir, fasta, "--esm-weights", str(esm_weights), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["genes"] == report["genes_placed"] == 40 and report["chromosomes"] == 4
    assert report["proteome"]["no_symbol"] == 1 and report["proteome"]["stop_codon"] == 1
    assert report["esm"]["computed"] == sum(1 + g % 3 for g in range(40))
    species_dir = model_dir / "species" / "chicken"
    assert not (species_dir / "esm_cache").exists()  # removed once the species is added
    after = _hashes(model_dir)
    assert {k: after[k] for k in official} == official  # official files untouched
    listing = pd.read_csv(model_dir / "new_species_protein_embeddings.csv")
    assert listing.to_dict("records") == [
        {
            "species": "chicken",
            "path": "species/chicken/chicken.gene_symbol_to_embedding_ESM2.pt",
            "chrom_csv": "species/chicken/chicken_to_chrom_pos.csv",
            "taxonomy_id": 9031,
        }
    ]

    # Gene token = mean over the gene's proteins of each protein's mean over residues.
    genes = torch.load(species_dir / "chicken.gene_symbol_to_embedding_ESM2.pt", weights_only=True)
    assert list(genes) == sorted(symbols)
    model, alphabet = esm_model
    proteome = read_proteome(fasta)
    seqs = proteome.sequences()
    convert = alphabet.get_batch_converter()
    with torch.inference_mode():
        per_protein = []
        for pid in ["P2.0", "P2.1", "P2.2"]:
            _, _, tokens = convert([(pid, seqs[pid])])
            rep = model(tokens, repr_layers=[2])["representations"][2]
            per_protein.append(rep[0, 1 : len(seqs[pid]) + 1].mean(0))
    assert torch.allclose(genes["G2"], torch.stack(per_protein).mean(0), atol=1e-5)

    listed = runner.invoke(app, ["species", "list", "--model-dir", str(model_dir), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {r["species"]: r for r in json.loads(listed.stdout)}
    assert rows["human"]["kind"] == "official" and rows["human"]["genes"] == 30
    assert rows["chicken"] | {"path": None} == {
        "species": "chicken",
        "kind": "added",
        "taxonomy_id": 9031,
        "path": None,
        "genes": 40,
        "problem": None,
    }
    table = runner.invoke(app, ["species", "list", "--model-dir", str(model_dir)])
    assert table.exit_code == 0 and "chicken" in table.output and "9031" in table.output

    # The loader: gene rows in dict order, then chromosome tokens seeded by the taxonomy id.
    uce = UCEModel(model_dir)
    vocab = uce.vocab("chicken")
    table = uce.network.pe_embedding.weight
    first = uce.config.n_tokens
    assert len(vocab) == 40
    assert torch.equal(table[vocab.token_rows[vocab.index["G2"]]], genes["G2"])
    torch.manual_seed(9031)
    assert torch.equal(table[first + 40 :], torch.normal(0, 1, (4, WIDTH)))

    rng = np.random.default_rng(0)
    cells = ad.AnnData(
        X=sp.csr_matrix(rng.poisson(3, (30, 40)).astype(np.float32)),
        var=pd.DataFrame(index=symbols),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(30)]),
    )
    cells.write_h5ad(tmp_path / "chicken.h5ad")
    out = tmp_path / "chicken_uce.h5ad"
    result = runner.invoke(
        app,
        [
            "embed",
            str(tmp_path / "chicken.h5ad"),
            str(out),
            "--species",
            "chicken",
            "--model-dir",
            str(model_dir),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["embedded"] == 30
    emb = ad.read_h5ad(out).obsm["X_uce"]
    assert np.isfinite(emb).all()
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


def test_precomputed_embeddings_keep_their_gene_order(tmp_path, model_dir):
    fasta = tmp_path / "c.fa"
    symbols = _write_chicken_fasta(fasta)
    gen = torch.Generator().manual_seed(7)
    order = ["NOT_IN_FASTA", *reversed(symbols)]
    pt = tmp_path / "chicken_esm2.pt"
    torch.save({s: torch.randn(WIDTH, generator=gen) for s in order}, pt)
    result = _add(model_dir, fasta, "--protein-embeddings", str(pt), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["genes"], report["genes_placed"], report["esm"]) == (41, 40, None)
    written = torch.load(model_dir / "species/chicken/chicken.gene_symbol_to_embedding_ESM2.pt")
    assert list(written) == order
    uce = UCEModel(model_dir)
    vocab = uce.vocab("chicken")
    first = uce.config.n_tokens
    assert vocab.token_rows[vocab.index["G39"]] == first + 1  # row = position in the dict
    assert "NOT_IN_FASTA" not in vocab.index  # no position: never sampled

    bad = tmp_path / "narrow.pt"
    torch.save({s: torch.zeros(8) for s in symbols}, bad)
    result = _add(model_dir, fasta, "--protein-embeddings", str(bad), "--replace")
    assert result.exit_code == 1 and "8-d" in result.stderr and "ESM-2 15B" in result.stderr


def test_gene_tokens_then_register_species(tmp_path, model_dir):
    """The two steps of `species add`, one at a time: the first writes nothing."""
    fasta = tmp_path / "c.fa"
    symbols = _write_chicken_fasta(fasta)
    pt = tmp_path / "e.pt"
    torch.save({s: torch.full((WIDTH,), float(i)) for i, s in enumerate(symbols)}, pt)
    before = _hashes(model_dir)
    tokens = gene_tokens(fasta, WIDTH, protein_embeddings=pt)
    assert (tokens.source, tokens.genes_placed, len(tokens.genes), tokens.esm) == (
        "precomputed",
        40,
        40,
        None,
    )
    assert _hashes(model_dir) == before
    with pytest.raises(InputDataError, match="32-d gene embeddings .* 8-d gene tokens"):
        gene_tokens(fasta, 8, protein_embeddings=pt)
    narrow = dataclasses.replace(tokens, genes={s: torch.ones(8) for s in symbols})
    with pytest.raises(InputDataError, match="8-d but this UCE checkpoint takes 32-d"):
        register_species("chicken", narrow, taxonomy_id=9031, model_dir=model_dir)
    assert _hashes(model_dir) == before

    report = register_species("chicken", tokens, taxonomy_id=9031, model_dir=model_dir)
    assert (report.genes, report.genes_placed, report.replaced) == (40, 40, False)
    assert [s["species"] for s in list_species(model_dir)] == ["human", "chicken"]
    uce = UCEModel(model_dir)
    vocab = uce.vocab("chicken")
    row = uce.network.pe_embedding.weight[vocab.token_rows[vocab.index["G3"]]]
    assert torch.equal(row, tokens.genes["G3"])
    with pytest.raises(InputDataError, match="--replace"):
        register_species("chicken", tokens, taxonomy_id=9031, model_dir=model_dir)


def test_a_taken_name_is_refused_unless_replace(tmp_path, model_dir):
    fasta = tmp_path / "c.fa"
    symbols = _write_chicken_fasta(fasta)
    pt = tmp_path / "e.pt"
    torch.save({s: torch.ones(WIDTH) for s in symbols}, pt)
    assert _add(model_dir, fasta, "--protein-embeddings", str(pt)).exit_code == 0
    again = _add(model_dir, fasta, "--protein-embeddings", str(pt))
    assert again.exit_code == 1 and "--replace" in again.stderr
    replaced = runner.invoke(
        app,
        [
            "species",
            "add",
            "chicken",
            "--proteome",
            str(fasta),
            "--taxonomy-id",
            "9032",
            "--protein-embeddings",
            str(pt),
            "--model-dir",
            str(model_dir),
            "--replace",
        ],
    )
    assert replaced.exit_code == 0, replaced.output
    assert "replaced" in replaced.output
    listing = pd.read_csv(model_dir / "new_species_protein_embeddings.csv")
    assert listing["species"].tolist() == ["chicken"] and listing["taxonomy_id"].tolist() == [9032]
    official = runner.invoke(
        app,
        [
            "species",
            "add",
            "human",
            "--proteome",
            str(fasta),
            "--taxonomy-id",
            "9606",
            "--protein-embeddings",
            str(pt),
            "--model-dir",
            str(model_dir),
            "--replace",
        ],
    )
    assert official.exit_code == 1 and "official species" in official.stderr


def test_argument_errors_are_one_line(tmp_path, model_dir, esm_weights):
    fasta = tmp_path / "c.fa"
    _write_chicken_fasta(fasta)
    neither = _add(model_dir, fasta)
    assert neither.exit_code == 1 and "exactly one of" in neither.stderr
    both = _add(model_dir, fasta, "--esm-weights", str(esm_weights), "--protein-embeddings", "x.pt")
    assert both.exit_code == 1 and len(both.stderr.strip().splitlines()) == 1
    from uceindex.species.register import add_species

    for bad in ["../evil", "NA", "9031"]:
        with pytest.raises(InputDataError, match="species name"):
            add_species(bad, fasta, taxonomy_id=1, model_dir=model_dir, esm_weights=esm_weights)
    with pytest.raises(InputDataError, match="taxonomy id"):
        add_species("chicken", fasta, taxonomy_id=0, model_dir=model_dir, esm_weights=esm_weights)


def test_species_add_resumes_after_an_interruption(tmp_path, model_dir, esm_weights):
    from uceindex.species.register import add_species

    fasta = tmp_path / "c.fa"
    _write_chicken_fasta(fasta)
    total = sum(1 + g % 3 for g in range(40))

    def interrupt(done, total):
        if done >= 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        add_species(
            "chicken",
            fasta,
            taxonomy_id=9031,
            model_dir=model_dir,
            esm_weights=esm_weights,
            tokens_per_batch=64,
            progress=interrupt,
        )
    assert not (model_dir / "new_species_protein_embeddings.csv").exists()  # not registered
    assert list((model_dir / "species/chicken/esm_cache").glob("shard-*.pt"))
    result = _add(model_dir, fasta, "--esm-weights", str(esm_weights), "--json")
    assert result.exit_code == 0, result.output
    esm_stats = json.loads(result.stdout)["esm"]
    assert (
        esm_stats["from_cache"] >= 20 and esm_stats["computed"] == total - esm_stats["from_cache"]
    )


def test_crafted_esm_weights_cache_and_embeddings_are_refused_in_one_line_not_run(
    tmp_path, model_dir, monkeypatch
):
    """Every torch file `species` reads is unpickled weights only, whatever the environment."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "ran"
    crafted = tmp_path / "crafted.pt"
    torch.save({"model": {"x": Payload(marker)}, "cfg": {}}, crafted)
    with pytest.raises(ModelFilesError, match="cannot read ESM weights crafted.pt") as err:
        load_esm(crafted, device="cpu")
    cache = tmp_path / "cache"
    cache.mkdir()
    torch.save({"p1": Payload(marker)}, cache / "shard-00000.pt")
    with pytest.raises(InputDataError, match="ESM cache shard") as err_cache:
        ProteinCache(cache, {}).load()
    fasta = tmp_path / "c.fa"
    _write_chicken_fasta(fasta)
    result = _add(model_dir, fasta, "--protein-embeddings", str(crafted))
    assert result.exit_code == 1 and "cannot read crafted.pt" in result.stderr
    for text in (str(err.value), str(err_cache.value), result.stderr.strip()):
        assert "\n" not in text and "io.open" in text, text
    assert not marker.exists()
