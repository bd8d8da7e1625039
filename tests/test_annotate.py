"""Annotation, novelty, similar cells and cross-species matching, on stores written by uceindex."""

from __future__ import annotations

import importlib
import json
import time
import zlib

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import uceindex
from cli.main import app
from tests.test_search import DIM, cells, centres, write_dataset
from uceindex.errors import QueryError, StoreError
from uceindex.ingestion import ingest_embeddings
from uceindex.model.load import UCEModel
from uceindex.model.tiny import write_tiny_model
from uceindex.search import annotate, match, novelty, similar, summarise
from uceindex.store import Store

runner = CliRunner()
KNOWN = np.arange(5)  # the store holds types 0-4; type 5 is never stored
HELD_OUT = 5


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    """Human cells of types 0-4 in two tissues, and mouse cells of types 0-4 (labels
    m0..m4) near the human ones, shifted along one direction."""
    uri = tmp_path_factory.mktemp("annotate") / "atlas"
    rng = np.random.default_rng(10)
    c = centres()
    x, labels = cells(rng, 1000, KNOWN, c)
    write_dataset(uri, "human1", x, labels, tissue=np.where(np.arange(1000) % 4, "lung", "blood"))
    shift = 1.5 * np.random.default_rng(11).standard_normal(DIM)
    xm, lm = cells(rng, 500, KNOWN, c + shift)
    frame = pd.DataFrame({"cell_type": [f"m{v}" for v in lm]}, index=[f"m{i}" for i in range(500)])
    ingest_embeddings(uri, "mouse1", frame, xm, "mouse", "synthetic", "synthetic-v1")
    return {"uri": str(uri), "centres": c, "shift": shift}


def query_cells(types, n, seed, centre):
    x, labels = cells(np.random.default_rng(seed), n, np.asarray(types), centre)
    return x, np.array([f"type{v}" for v in labels])


def test_labels_recovered_with_confidence_and_neighbours(atlas):
    x, truth = query_cells(KNOWN, 100, 1, atlas["centres"])
    frame = annotate(atlas["uri"], x, k=20, neighbour_ids=True)
    assert list(frame.columns) == [
        "predicted",
        "confidence",
        "runner_up",
        "runner_up_share",
        "mean_similarity",
        "n_neighbours",
        "novel",
        "neighbours",
    ]
    assert (frame["predicted"].to_numpy() == truth).all()
    assert (frame["confidence"] > 0.99).all() and frame["runner_up"].isna().all()
    assert (frame["n_neighbours"] == 20).all() and frame["novel"].mean() <= 0.05  # ~1% by rule
    ids = frame["neighbours"].iloc[0].split(";")
    assert len(ids) == 20 and all(i.startswith("human1/") for i in ids)  # mouse cells lie far off
    assert frame.attrs["search"] == {"kind": "flat"} and frame.attrs["k"] == 20


def test_where_narrows_the_reference(atlas):
    x, _ = query_cells(KNOWN, 20, 2, atlas["centres"])
    frame = annotate(atlas["uri"], x, k=10, where="tissue = 'blood'", neighbour_ids=True)
    with Store.open(atlas["uri"]) as store:
        blood = set(
            store.cells.search()
            .where("tissue = 'blood'")
            .select(["cell_id"])
            .limit(None)
            .to_arrow()
            .column("cell_id")
            .to_pylist()
        )
    used = {i for row in frame["neighbours"] for i in row.split(";")}
    assert used <= blood and frame.attrs["reference_cells"] == 250


def test_held_out_type_is_novel(atlas):
    known, _ = query_cells(KNOWN, 200, 3, atlas["centres"])
    new, _ = query_cells([HELD_OUT], 50, 4, atlas["centres"])
    frame = annotate(atlas["uri"], np.vstack([known, new]), k=15)
    novel = frame["novel"].to_numpy(dtype=bool)
    assert novel[200:].all()  # every cell of the unseen type
    assert novel[:200].mean() <= 0.05  # ~1% of seen types, by the calibration rule
    assert 0 < frame.attrs["novelty_threshold"] < 1


def test_threshold_is_cached_per_store_version(atlas, tmp_path):
    uri = tmp_path / "atlas"
    x, labels = cells(np.random.default_rng(5), 400, KNOWN, atlas["centres"])
    write_dataset(uri, "one", x, labels)
    cache = tmp_path / "cache" / "uceindex" / "novelty.json"  # $XDG_CACHE_HOME/uceindex
    calibrations = set()

    def calibrated() -> int:
        """Thresholds computed so far: each is written to the disk cache with its time."""
        entries = json.loads(cache.read_text())
        calibrations.update((key, e["at"]) for key, e in entries.items())
        return len(calibrations)

    q = x[:5]
    first = annotate(uri, q, k=10).attrs["novelty_threshold"]
    assert calibrated() == 1
    entries = json.loads(cache.read_text())
    (key,) = entries
    entries[key]["threshold"] = 0.125  # so that an answer from the disk cache shows
    cache.write_text(json.dumps(entries))
    assert annotate(uri, q, k=10).attrs["novelty_threshold"] == first  # from memory
    importlib.reload(novelty)  # a new process: the disk cache answers, nothing is computed
    assert annotate(uri, q, k=10).attrs["novelty_threshold"] == 0.125 and calibrated() == 1
    annotate(uri, q, k=12)  # another k, another threshold
    assert calibrated() == 2
    write_dataset(uri, "two", x[:50], labels[:50])  # a new table version
    annotate(uri, q, k=10)
    assert calibrated() == 3


def test_unsearchable_query_rows_get_no_prediction(atlas):
    x, _ = query_cells(KNOWN, 3, 6, atlas["centres"])
    x[1] = np.nan
    frame = annotate(atlas["uri"], x, k=5)
    assert frame["predicted"].isna().tolist() == [False, True, False]
    assert frame["novel"].isna().tolist() == [False, True, False]
    assert frame["n_neighbours"].tolist() == [5, 0, 5]
    none = annotate(atlas["uri"], np.full((2, DIM), np.nan), k=5)
    assert none["predicted"].isna().all() and none["novel"].isna().all()


def test_summary_of_a_prediction_frame(atlas):
    x, _ = query_cells([0, 0, 1], 3, 6, atlas["centres"])
    x[2] = np.nan
    frame = annotate(atlas["uri"], np.vstack([x, atlas["centres"][HELD_OUT]]), k=5)
    summary = summarise(frame)
    assert summary["k"] == 5 and summary["store"] == atlas["uri"]  # the settings, as attrs
    assert (summary["cells"], summary["not_searched"]) == (4, 1)
    assert summary["novel"] == int(frame["novel"].sum()) >= 1  # the unseen type at least
    first = summary["labels"][0]
    assert first["predicted"] == "type0" and first["cells"] == 2
    assert sum(row["cells"] for row in summary["labels"]) == 3
    assert first["mean_confidence"] == frame.loc[frame["predicted"] == "type0", "confidence"].mean()
    off = summarise(annotate(atlas["uri"], x, k=5, novelty=False))
    assert off["novel"] is None and all(row["novel"] is None for row in off["labels"])


def test_clear_errors(atlas, tmp_path):
    x, _ = query_cells(KNOWN, 3, 7, atlas["centres"])
    with pytest.raises(QueryError, match="no label column 'cell_label'.*cell_type"):
        annotate(atlas["uri"], x, label="cell_label")
    with pytest.raises(QueryError, match="only 250 labelled cells where tissue = 'blood'"):
        annotate(atlas["uri"], x, k=300, where="tissue = 'blood'")
    with pytest.raises(QueryError, match="no stored cell has a 'cell_type' label"):
        annotate(atlas["uri"], x, where="tissue = 'bone'")
    with pytest.raises(QueryError, match="cannot filter"):
        annotate(atlas["uri"], x, where="tissue = = 'x'")
    with pytest.raises(QueryError, match="are 16-d but the store holds 32-d"):
        annotate(atlas["uri"], np.ones((2, 16)))
    with Store.open(tmp_path / "empty", create=True):
        pass
    with pytest.raises(StoreError, match="no cells yet"):
        annotate(tmp_path / "empty", x)
    with pytest.raises(StoreError, match="no store"):
        annotate(tmp_path / "missing", x)
    with pytest.raises(QueryError, match="no cell 'human1/nope'"):
        similar(atlas["uri"], "human1/nope")
    with pytest.raises(QueryError, match="only 1499 other cells"):
        similar(atlas["uri"], "human1/c0", k=1500)


def test_similar(atlas):
    frame = similar(atlas["uri"], "human1/c0", 8)
    assert list(frame.columns) == [
        "rank",
        "cell_id",
        "similarity",
        "dataset_id",
        "species",
        "cell_type",
        "tissue",
    ]
    assert "human1/c0" not in set(frame["cell_id"]) and len(frame) == 8
    assert (np.diff(frame["similarity"]) <= 0).all() and (frame["cell_type"] == "type0").all()
    mouse = similar(atlas["uri"], "human1/c0", 5, where="species = 'mouse'")
    assert (mouse["cell_type"] == "m0").all()  # the mouse counterpart of type0


def test_match_across_species(atlas, tmp_path):
    xm, lm = cells(np.random.default_rng(8), 100, KNOWN, atlas["centres"] + atlas["shift"])
    query = ad.AnnData(
        obs=pd.DataFrame({"cell_type": [f"m{v}" for v in lm]}, index=[f"q{i}" for i in range(100)])
    )
    query.obsm["X_emb"] = xm
    result = match(
        atlas["uri"], query, species="mouse", against="human", embedding_key="X_emb", k=10
    )
    assert set(result.cells["predicted"]) <= {f"type{t}" for t in KNOWN}  # human labels only
    best = result.table.drop_duplicates("query_label").set_index("query_label")["reference_label"]
    assert best.to_dict() == {f"m{t}": f"type{t}" for t in KNOWN}
    assert result.matrix.shape == (5, 5) and np.allclose(np.diag(result.matrix.to_numpy()), 1.0)
    png = result.plot(tmp_path / "match.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(QueryError, match="no zebrafish cells.*human, mouse"):
        match(atlas["uri"], query, species="mouse", against="zebrafish", embedding_key="X_emb")
    with pytest.raises(QueryError, match="no obs column 'louvain'"):
        match(
            atlas["uri"],
            query,
            species="mouse",
            against="human",
            embedding_key="X_emb",
            query_label="louvain",
        )


def test_match_gives_each_query_labels_share_of_novel_cells(atlas):
    """Cells of a type the reference lacks land on some reference label all the same; the
    novel share tells them apart from cells that match."""
    x, _ = query_cells(KNOWN, 40, 13, atlas["centres"])
    far, _ = query_cells([HELD_OUT], 40, 14, atlas["centres"])
    own = ["known"] * 40 + ["held out"] * 40
    query = ad.AnnData(obs=pd.DataFrame({"cell_type": own}, index=[f"q{i}" for i in range(80)]))
    query.obsm["X_emb"] = np.vstack([x, far]).astype(np.float32)
    result = match(
        atlas["uri"], query, species="mouse", against="human", embedding_key="X_emb", k=10
    )
    share = result.best().set_index("query_label")["novel_share"]
    assert share["held out"] > 0.9 and share["known"] < 0.1
    assert result.cells["predicted"].notna().all()  # every cell got a reference label


# -- the store's model: embedding on the fly, refusing another -------------------------------------


@pytest.fixture(scope="module")
def model_store(tmp_path_factory, tiny_model):
    """The 60 PBMCs of `small_pbmc` embedded with the tiny model, ingested as a store bound
    to it."""
    from tests.conftest import read_pbmc

    pbmc = read_pbmc()[:60].copy()
    emb = uceindex.embed(pbmc, "human", model=tiny_model)
    uri = tmp_path_factory.mktemp("model_store") / "atlas"
    ingest_embeddings(
        uri, "pbmc", pbmc.obs[["cell_type"]], emb, "human", tiny_model.name, tiny_model.fingerprint
    )
    return str(uri)


def test_query_embedded_with_the_store_model(model_store, tiny_model_dir, small_pbmc):
    query = small_pbmc[:20].copy()
    frame = annotate(
        model_store, query, species="human", model_dir=tiny_model_dir, k=5, neighbour_ids=True
    )
    first = [row.split(";")[0] for row in frame["neighbours"]]
    assert first == [f"pbmc/{name}" for name in query.obs_names]  # same cell, same embedding
    assert "X_uce" in query.obsm  # embedded on the way


def test_another_model_or_width_is_refused(model_store, tmp_path, pbmc_genes, small_pbmc):
    other = write_tiny_model(tmp_path / "other", {"human": pbmc_genes[:700]}, seed=1)
    with pytest.raises(QueryError, match="--model-dir"):
        annotate(model_store, small_pbmc, species="human", model_dir=other)
    with pytest.raises(QueryError, match="are 50-d but the store holds 16-d"):
        annotate(model_store, small_pbmc, embedding_key="X_pca")
    small_pbmc.obsm["X_uce"] = np.ones((small_pbmc.n_obs, 16), dtype=np.float32)
    small_pbmc.uns["uce"] = {"fingerprint": UCEModel(other).fingerprint}
    with pytest.raises(QueryError, match="made by model fingerprint"):
        annotate(model_store, small_pbmc, embedding_key="X_uce")
    with pytest.raises(QueryError, match="needs its species"):
        annotate(model_store, small_pbmc)


# -- the shipped labelled PBMCs: uceindex beside scikit-learn -------------------------------------


def _scores(truth, pred) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    pred = np.asarray(pred, dtype=object)
    pred = np.where(pd.isna(pred), "(none)", pred)
    return accuracy_score(truth, pred), f1_score(truth, pred, average="macro", zero_division=0)


def test_pbmc_held_out_batches_beside_sklearn(tmp_path, pbmc):
    """pbmc700 has no donor or batch column (one donor, 10x PBMC 68k): its cells are split
    into 5 deterministic pseudo-batches (crc32 of the cell name mod 5), and separately by
    cell-cycle phase (G1 vs S/G2M); each part is annotated from the others on obsm["X_pca"]
    by uceindex (similarity-weighted vote) and by KNeighborsClassifier (cosine, uniform).
    bench/annotate.py prints the same comparison as a table."""
    from sklearn.neighbors import KNeighborsClassifier

    k = 15
    x = pbmc.obsm["X_pca"].astype(np.float32)
    truth = pbmc.obs["cell_type"].astype(str).to_numpy()
    splits = {
        "5 pseudo-batches": np.array([zlib.crc32(n.encode()) % 5 for n in pbmc.obs_names]),
        "phase G1 | S+G2M": (pbmc.obs["phase"] != "G1").to_numpy().astype(int),
    }
    for name, part in splits.items():
        ours = np.empty(len(truth), dtype=object)
        theirs = np.empty(len(truth), dtype=object)
        for p in np.unique(part):
            held, rest = part == p, part != p
            uri = tmp_path / f"{name[:5]}{p}"
            obs = pbmc.obs.loc[rest, ["cell_type"]].astype(str)
            ingest_embeddings(uri, "rest", obs, x[rest], "human", "pca", "pca-50")
            ours[held] = annotate(uri, x[held], k=k, novelty=False)["predicted"].to_numpy()
            clf = KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(x[rest], truth[rest])
            theirs[held] = clf.predict(x[held])
        (acc, f1), (sk_acc, sk_f1) = _scores(truth, ours), _scores(truth, theirs)
        assert acc >= sk_acc - 0.02 and f1 >= sk_f1 - 0.03, name
        assert acc > 0.6, name


# -- command line --------------------------------------------------------------------------------


def test_cli_annotate_and_its_alias_query(atlas, tmp_path):
    x, truth = query_cells(KNOWN, 30, 9, atlas["centres"])
    query = ad.AnnData(obs=pd.DataFrame(index=[f"q{i}" for i in range(30)]))
    query.obsm["X_emb"] = x.astype(np.float32)
    src = tmp_path / "query.h5ad"
    query.write_h5ad(src)
    base = ["annotate", str(src), "--store", atlas["uri"], "--embedding-key", "X_emb", "--k", "10"]

    result = runner.invoke(app, [*base, "--out", str(tmp_path / "pred.csv")])
    assert result.exit_code == 0, result.output
    assert "type0" in result.output and "novel: 0 cells" in result.output
    csv = pd.read_csv(tmp_path / "pred.csv", index_col="cell")
    assert (csv["predicted"].to_numpy() == truth).all()

    result = runner.invoke(app, [*base, "--neighbours", "--out", str(tmp_path / "pred.parquet")])
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(tmp_path / "pred.parquet")["neighbours"].iloc[0].split(";")) == 10

    result = runner.invoke(app, [*base, "--out", str(tmp_path / "pred.h5ad"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cells"] == 30
    alias = runner.invoke(app, ["query", *base[1:], "--out", str(tmp_path / "pred.h5ad"), "--json"])
    assert alias.exit_code == 0 and json.loads(alias.stdout) == json.loads(result.stdout)
    assert "Alias of annotate" in runner.invoke(app, ["--help"]).output
    annotated = ad.read_h5ad(tmp_path / "pred.h5ad")
    assert (annotated.obs["cell_type_predicted"].astype(str).to_numpy() == truth).all()
    assert annotated.obs["cell_type_novel"].sum() == 0 and "X_emb" in annotated.obsm

    result = runner.invoke(app, [*base, "--out", str(tmp_path / "pred.txt")])
    assert result.exit_code == 1 and ".csv, .parquet, .h5ad" in result.output


def test_cli_match(atlas, tmp_path):
    xm, lm = cells(np.random.default_rng(12), 60, KNOWN, atlas["centres"] + atlas["shift"])
    query = ad.AnnData(
        obs=pd.DataFrame({"label": [f"m{v}" for v in lm]}, index=[f"q{i}" for i in range(60)])
    )
    query.obsm["X_emb"] = xm.astype(np.float32)
    src = tmp_path / "mouse.h5ad"
    query.write_h5ad(src)
    args = ["match", str(src), "--species", "mouse", "--against", "human", "--query-label", "label"]
    args += ["--store", atlas["uri"], "--embedding-key", "X_emb", "--k", "10"]
    args += ["--plot", str(tmp_path / "m.png"), "--out", str(tmp_path / "m.csv")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best reference label" in result.output and "type3" in result.output
    assert (tmp_path / "m.png").stat().st_size > 1000
    table = pd.read_csv(tmp_path / "m.csv")
    assert list(table.columns) == [
        "query_label",
        "reference_label",
        "n_cells",
        "share",
        "mean_similarity",
        "novel_share",
    ]


def test_k_and_where_are_checked_before_the_query_is_embedded(atlas):
    """The query needs the model (it has no embeddings): the store's checks come first."""
    query = ad.AnnData(
        obs=pd.DataFrame({"cell_type": ["a"] * 5}, index=[f"q{i}" for i in range(5)])
    )
    with pytest.raises(QueryError, match="only 250 labelled cells where tissue = 'blood'"):
        annotate(atlas["uri"], query, k=300, where="tissue = 'blood'", species="human")
    with pytest.raises(
        QueryError, match="^cannot filter cells with .*tisue = 1.*Did you mean 'tissue'"
    ):
        annotate(atlas["uri"], query, where="tisue = 1", species="human")
    with pytest.raises(QueryError, match="lower --k"):
        match(
            atlas["uri"], query.copy(), species="mouse", against="human", k=10**6, query_label=None
        )


EMB = ["--embedding-key", "X_emb"]
MATCH = ["match", "{q}", "--species", "mouse", "--against", "human", *EMB, "--store", "{store}"]


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["embed", "{q}", "{nodir}/out.h5ad", "--model-dir", "{model}"], "no folder"),
        (["embed", "{q}", "{tmp}/out.txt", "--model-dir", "{model}"], "must end in .h5ad"),
        (["annotate", "{q}", *EMB, "--store", "{store}", "--out", "{nodir}/p.csv"], "--out"),
        (["query", "{q}", *EMB, "--store", "{store}", "--out", "{tmp}/pred.txt"], "--out"),
        (["annotate", "{q}", *EMB, "--store", "{store}", "--where", "tisue = 'x'"], "tisue"),
        ([*MATCH, "--out", "{nodir}/m.csv"], "--out"),
        ([*MATCH, "--cells-out", "{tmp}/cells.txt"], "--cells-out"),
        ([*MATCH, "--plot", "{tmp}/m.pdf"], "--plot"),
        (["export", "{nodir}/back.h5ad", "--dataset", "human1", "--store", "{store}"], "OUTPUT"),
        (
            ["similar", "--cell-id", "human1/c0", "--where", "tisue = 1", "--store", "{store}"],
            "tisue",
        ),
        (["sql", "SELECT 1", "--out", "{nodir}/r.csv", "--store", "{store}"], "--out"),
    ],
)
def test_a_bad_output_or_filter_fails_at_once_in_one_line(
    atlas, small_pbmc, tiny_model_dir, tmp_path, command, says
):
    """Inputs every command would take, and one bad option: refused first, in one line."""
    small_pbmc.obsm["X_emb"] = np.random.default_rng(0).standard_normal((60, DIM))
    src = tmp_path / "q.h5ad"
    small_pbmc.write_h5ad(src)
    values = {
        "q": src,
        "nodir": tmp_path / "nodir",
        "tmp": tmp_path,
        "store": atlas["uri"],
        "model": tiny_model_dir,
    }
    started = time.perf_counter()
    result = runner.invoke(app, [part.format(**values) for part in command])
    assert time.perf_counter() - started < 1.0
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert says in result.stderr
    assert {p.name for p in tmp_path.iterdir()} - {"cache"} == {"q.h5ad"}  # nothing written
