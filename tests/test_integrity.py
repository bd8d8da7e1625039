"""A damaged store (files deleted or truncated on disk, for real) is one line in every command,
`uceindex check` finds what is wrong and `--repair` brings the store back to a consistent
version; two ingests of one data set at once have one outcome."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from uceindex import check_store, ingest
from uceindex.errors import StoreDamagedError
from uceindex.store import Store

runner = CliRunner()
CHUNK = 10  # cells per commit: several versions of `cells` per data set


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """Two pre-embedded data sets (obsm X_pca), `a` (30 cells) then `b` (30 cells)."""
    from tests.conftest import read_pbmc

    root = tmp_path_factory.mktemp("pristine")
    pbmc = read_pbmc()
    for name, rows in (("a", slice(0, 30)), ("b", slice(30, 60))):
        pbmc[rows].copy().write_h5ad(root / f"{name}.h5ad")
    store = root / "store"
    ingest(
        [root / "a.h5ad", root / "b.h5ad"],
        species="human",
        store=store,
        embedding_key="X_pca",
        chunk_cells=CHUNK,
    )
    return root


@pytest.fixture
def atlas(pristine, tmp_path) -> Path:
    """A fresh copy of the pristine store, to damage."""
    shutil.copytree(pristine / "store", tmp_path / "store")
    return tmp_path / "store"


def manifests(store: Path, table: str) -> list[Path]:
    """The table's manifests, newest first (Lance's V2 names count down)."""
    return sorted((store / f"{table}.lance" / "_versions").glob("*.manifest"))


def data_files(store: Path, table: str) -> list[Path]:
    """The table's data files, oldest first."""
    return sorted(
        (store / f"{table}.lance" / "data").glob("*.lance"), key=lambda p: p.stat().st_mtime_ns
    )


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def commands(pristine: Path, store: Path) -> dict[str, list[str]]:
    s = ["--store", str(store)]
    return {
        "datasets": ["datasets", *s],
        "similar": ["similar", "--cell-id", f"a/{_first_cell(pristine)}", "--k", "3", *s],
        "query": ["query", str(pristine / "b.h5ad"), "--embedding-key", "X_pca", *s],
        "ingest": [
            "ingest",
            str(pristine / "a.h5ad"),
            "--embedding-key",
            "X_pca",
            "--species",
            "human",
            *s,
        ],
        "sql": ["sql", "SELECT count(*) FROM cells", *s],
        "export": ["export", str(store.parent / "out.h5ad"), "--dataset", "a", *s],
        "serve": ["serve", *s],
    }


def _first_cell(pristine: Path) -> str:
    import anndata as ad

    return str(ad.read_h5ad(pristine / "a.h5ad", backed="r").obs_names[0])


DAMAGE = {
    "deleted data file": lambda s: data_files(s, "cells")[-1].unlink(),
    "truncated data file": lambda s: truncate(data_files(s, "cells")[-1]),
    "deleted latest manifest": lambda s: manifests(s, "cells")[0].unlink(),
    "truncated latest manifest": lambda s: truncate(manifests(s, "cells")[0]),
    "truncated datasets manifest": lambda s: truncate(manifests(s, "datasets")[0]),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_every_command_says_in_one_line_that_the_store_is_damaged(
    damage, pristine, atlas, monkeypatch
):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **options: None)  # serve: up to the start
    DAMAGE[damage](atlas)
    for name, args in commands(pristine, atlas).items():
        result = runner.invoke(app, args, env={"COLUMNS": "400"})
        assert result.exit_code == 1, (damage, name, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)
        lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "is damaged" in lines[0], (damage, name, result.output)
        assert f"uceindex check --store {atlas}" in lines[0]
        assert "Traceback" not in result.output


def test_a_lost_manifest_is_named_not_served(atlas):
    """Lance serves the previous version when the latest manifest is gone; the store refuses."""
    manifests(atlas, "cells")[0].unlink()
    with pytest.raises(
        StoreDamagedError,
        match=r"`cells` holds 20 rows of data set b, whose "
        r"complete ingest recorded 30",
    ):
        Store.open(atlas)


def test_a_served_store_damaged_while_serving_is_refused(atlas, monkeypatch):
    from uceindex.service import deps

    monkeypatch.setattr(deps, "REFRESH_SECONDS", 0.0)
    view = deps.StoreView(str(atlas))
    assert view.get().count() == 60
    manifests(atlas, "cells")[0].unlink()
    with pytest.raises(StoreDamagedError, match="holds 20 rows of data set b"):
        view.get()
    view.close()


def test_intact_store_checks_clean(atlas):
    report = check_store(atlas)
    assert report.ok and report.problems == [] and report.repaired == []
    assert report.tables["cells"]["rows"] == 60 and report.tables["cells"]["readable"]
    assert [d["stored"] for d in report.datasets] == [[30, 0], [30, 0]]
    result = runner.invoke(app, ["check", "--store", str(atlas), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["ok"] is True


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_check_finds_the_damage_and_repair_restores_a_consistent_version(damage, pristine, atlas):
    DAMAGE[damage](atlas)
    found = runner.invoke(app, ["check", "--store", str(atlas), "--json"])
    assert found.exit_code == 1
    assert json.loads(found.stdout)["problems"], found.stdout
    fixed = runner.invoke(app, ["check", "--store", str(atlas), "--repair", "--json"])
    report = json.loads(fixed.stdout)
    assert fixed.exit_code == 0 and report["ok"] and report["repaired"], fixed.stdout
    with Store.open(atlas) as store:  # opens again, and the rows agree with `datasets`
        rows = {r["dataset_id"]: r for r in store.datasets().to_dict("records")}
        for dataset_id, row in rows.items():
            if row["status"] == "complete":
                assert store.count(dataset_id) == row["n_embedded"]
    # the same ingest as before finishes what the repair left unfinished
    again = ingest(
        [pristine / "a.h5ad", pristine / "b.h5ad"],
        species="human",
        store=atlas,
        embedding_key="X_pca",
        chunk_cells=CHUNK,
    )
    assert [d.n_embedded for d in again.datasets] == [30, 30]
    assert check_store(atlas).ok


def test_a_deleted_datasets_table_refuses_ingest(pristine, atlas):
    shutil.rmtree(atlas / "datasets.lance")
    result = runner.invoke(app, commands(pristine, atlas)["ingest"], env={"COLUMNS": "400"})
    assert result.exit_code == 1 and "no `datasets` table" in result.output
    assert not (atlas / "datasets.lance").exists()  # no new one beside the orphaned cells
    report = check_store(atlas, repair=True)
    assert not report.ok and "new store" in report.problems[0]


def test_an_unreadable_index_is_reported_and_dropped(atlas):
    import lance

    lance.dataset(str(atlas / "cells.lance")).create_index(
        "embedding", index_type="IVF_FLAT", num_partitions=2, metric="cosine"
    )
    assert check_store(atlas).indexes[0]["unindexed_rows"] == 0
    for path in (atlas / "cells.lance" / "_indices").rglob("*.idx"):
        path.unlink()
    report = check_store(atlas)
    assert not report.ok and "index embedding_idx cannot be read" in report.problems[0]
    fixed = check_store(atlas, repair=True)
    assert fixed.ok and "dropped the unreadable index" in fixed.repaired[-1]


# -- two ingests of one data set at once -----------------------------------------------------


def test_a_second_ingest_of_a_data_set_being_ingested_is_refused_at_once(pristine, tmp_path):
    from uceindex.store.lock import ingest_lock

    store = tmp_path / "store"
    args = commands(pristine, store)["ingest"]
    assert runner.invoke(app, args).exit_code == 0
    with ingest_lock(str(store), "a", "/elsewhere/a.h5ad"):
        result = runner.invoke(app, [*args, "--replace"], env={"COLUMNS": "400"})
    assert result.exit_code == 1
    assert "data set 'a' is being ingested into" in result.output
    assert "from /elsewhere/a.h5ad" in result.output and "Traceback" not in result.output
    assert runner.invoke(app, [*args, "--replace"]).exit_code == 0  # released with the block


def _outcome(path: Path, store: Path) -> str:
    from uceindex.errors import StoreBusyError

    try:
        report = ingest(path, species="human", store=store, embedding_key="X_pca", chunk_cells=5)
    except StoreBusyError as exc:
        assert "is being ingested into" in str(exc)
        return "refused"
    return report.datasets[0].action


def _settled(store: Path, outcomes: list[str]) -> None:
    """One ran; the other was refused while it ran, or found it complete after; rows right."""
    assert sorted(outcomes) in (["ingested", "refused"], ["ingested", "skipped"]), outcomes
    with Store.open(store) as opened:
        assert opened.count("a") == 30 and opened.complete_dataset_ids() == ["a"]
    assert check_store(store).ok


def test_the_same_file_ingested_twice_at_once_has_one_outcome(pristine, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    for attempt in range(3):  # threads: each one's lock is its own open file, as a process's
        store = tmp_path / f"store{attempt}"
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(_outcome, pristine / "a.h5ad", store) for _ in range(2)]
            _settled(store, [f.result() for f in futures])


def test_two_processes_started_at_once(pristine, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    store = tmp_path / "store"
    args = commands(pristine, store)["ingest"] + ["--chunk-cells", "5", "--json"]
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = []
    for run in runs:
        out, err = run.communicate(timeout=240)
        assert "Traceback" not in err
        if run.returncode:
            assert run.returncode == 1 and "is being ingested into" in err, err
            outcomes.append("refused")
        else:
            outcomes.append(json.loads(out)["datasets"][0]["action"])
    _settled(store, outcomes)


def test_a_file_lost_after_the_store_opened_is_one_line_when_read(pristine, atlas):
    """What object storage gives (no `stat` there): the file is found missing when read."""
    from uceindex import similar

    with Store.open(atlas) as store:
        for path in data_files(atlas, "cells"):
            path.unlink()
        with pytest.raises(StoreDamagedError, match="table `cells` cannot be read .*Not found"):
            similar(store, f"a/{_first_cell(pristine)}", exact=True)
