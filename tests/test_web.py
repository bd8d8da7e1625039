"""The web page in a real headless Chromium (Playwright) against a real `uceindex serve` on
127.0.0.1, with a token: log in, browse the atlas, upload the demo query, check the table
against the API's answer, map, heatmap, SQL, downloads. Screenshots go to the test's
temporary folder. Without a browser these tests fail and say how to install one."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import read_pbmc
from tests.test_service import _serve
from uceindex.ingestion import ingest

TOKEN = "web-s3cret"
CHROMIUM = Path("/usr/bin/chromium")
INSTALL = (
    "the browser tests need Debian's chromium at /usr/bin/chromium: run `make browser` "
    "(as root it runs apt-get install -y --no-install-recommends chromium chromium-driver)"
)
SLOW_MS = 180_000  # a step under load (2 shared cores); the first UMAP compiles with numba
MAP_MS = 600_000


def _auth():
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's split (make demo): every 4th PBMC is the query, the rest the reference,
    stored by its shipped PCA (obsm X_pca)."""
    tmp = tmp_path_factory.mktemp("web")
    pbmc = read_pbmc()
    query = pbmc.obs_names[::4]
    pbmc[query].copy().write_h5ad(tmp / "query.h5ad")
    pbmc[~pbmc.obs_names.isin(query)].copy().write_h5ad(tmp / "reference.h5ad")
    ingest(tmp / "reference.h5ad", species="human", store=str(tmp / "atlas"), embedding_key="X_pca")
    return tmp


@pytest.fixture(scope="module")
def server(demo):
    proc, url = _serve(demo / "atlas", {"UCEINDEX_TOKEN": TOKEN}, args=["--max-upload-mb", "5"])
    yield url
    proc.terminate()
    proc.wait(10)


def _require(chromium: Path) -> None:
    """Fail, never skip, where the browser is missing: CI must not pass without these tests."""
    if not chromium.is_file():
        pytest.fail(INSTALL)


def test_a_missing_browser_fails_saying_how_to_install_it(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="make browser.*apt-get install"):
        _require(tmp_path / "chromium")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[test]'; " + INSTALL)
    _require(CHROMIUM)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def context(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    context.set_default_timeout(SLOW_MS)
    yield context
    context.close()


@pytest.fixture(scope="module")
def page(context, server):
    page = context.new_page()
    page.goto(server + "/")
    yield page


def _table(page, selector: str) -> pd.DataFrame:
    """The table the page shows in `selector` (its current page of rows), as text."""
    data = page.eval_on_selector(
        selector + " table",
        """t => ({head: [...t.tHead.rows[0].cells].map(c => c.innerText.trim()),
                  rows: [...t.tBodies[0].rows].map(r => [...r.cells].map(c => c.innerText))})""",
    )
    return pd.DataFrame(data["rows"], columns=data["head"])


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _login(page, then: str = "#datasets-table table"):
    page.fill("#token", TOKEN)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector(then)


def test_only_the_login_page_and_health_answer_without_the_token(server):
    for path in ("/", "/web/app.js", "/web/style.css", "/health"):
        assert httpx.get(server + path).status_code == 200, path
    for path in ("/atlas", "/datasets/reference", "/jobs", "/web/lib/plotly.min.js", "/similar"):
        r = httpx.get(server + path)
        assert r.status_code == 401 and r.json()["error"]["type"] == "Unauthorized", path
    r = httpx.post(server + "/jobs/annotate", files={"file": ("q.h5ad", b"x")})
    assert r.status_code == 401


def test_log_in_once_then_browse_the_atlas(page, shots):
    page.wait_for_selector("#page-login:not([hidden])")
    page.screenshot(path=shots / "login.png")
    page.fill("#token", "wrong")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#error:not([hidden])")
    assert "bearer token" in page.inner_text("#error")
    _login(page)
    assert "525 cells in 1 data sets" in page.inner_text("#atlas-summary")
    datasets = page.inner_text("#datasets-table table")
    assert "reference" in datasets and "complete" in datasets and "human" in datasets
    counts = _table(page, "#counts-table")
    assert sum(map(_number, counts["cells"])) == 525
    page.fill("#counts-table-filter", "CD14")  # searchable
    assert "CD14+ Monocyte" in page.inner_text("#counts-table table")
    assert "CD19+ B" not in page.inner_text("#counts-table table")
    page.click("#counts-table th:nth-child(3) button")  # sortable
    page.screenshot(path=shots / "atlas.png", full_page=True)
    page.click("#datasets-table a")
    page.wait_for_selector("#dataset-columns table")
    assert "cell_type" in page.inner_text("#dataset-columns") and "louvain" in page.inner_text(
        "#dataset-columns"
    )
    page.screenshot(path=shots / "dataset.png", full_page=True)


def _upload(url: str, path: Path, fields: dict):
    """POST an .h5ad with form fields, as the page's upload does."""
    with open(path, "rb") as f:
        return httpx.post(
            url,
            files={"file": (path.name, f)},
            data={k: str(v) for k, v in fields.items()},
            headers=_auth(),
            timeout=120,
        )


def _api_annotation(server, path: Path, **fields) -> dict:
    r = _upload(server + "/annotate", path, fields)
    assert r.status_code == 200, r.text
    return r.json()


def test_upload_the_demo_query_and_get_the_apis_table(page, server, demo, shots):
    page.click("nav a[data-page=annotate]")
    page.set_input_files("#a-file", demo / "query.h5ad")
    page.fill("#a-k", "15")
    page.fill("#a-embedding", "X_pca")
    page.click("#annotate-form button[type=submit]")
    page.wait_for_selector("#annotate-result:not([hidden])")
    page.screenshot(path=shots / "annotate.png", full_page=True)
    api = _api_annotation(server, demo / "query.h5ad", k=15, embedding_key="X_pca")
    shown = _table(page, "#predictions-table")
    expected = pd.DataFrame(api["predictions"]).head(len(shown))
    assert len(shown) == 50
    assert list(shown["cell"]) == list(expected["cell"])
    assert list(shown["label"]) == list(expected["predicted"])
    assert list(shown["runner-up"]) == [r or "" for r in expected["runner_up"]]
    assert np.allclose(shown["confidence"].map(_number), expected["confidence"], atol=1e-3)
    assert list(shown["novel"]) == [str(v).lower() for v in expected["novel"]]
    summary = page.inner_text("#annotate-summary")
    assert (
        f"{api['summary']['cells']} cells" in summary
        and f"{api['summary']['novel']} novel" in summary
    )
    with page.expect_download() as info:
        page.click("button[data-file='predictions.csv']")
    csv = pd.read_csv(info.value.path(), index_col=0)
    assert list(csv.index) == [p["cell"] for p in api["predictions"]]
    assert list(csv["predicted"]) == [p["predicted"] for p in api["predictions"]]
    with page.expect_download() as info:
        page.click("button[data-file='predictions.h5ad']")
    import anndata as ad

    out = ad.read_h5ad(info.value.path())
    assert list(out.obs["cell_type_predicted"]) == list(csv["predicted"])


def test_a_closed_page_finds_its_job_again(context, server):
    page = context.new_page()
    page.goto(server + "/#annotate")
    _login(page, then="#annotate-result:not([hidden])")  # a new tab asks again
    assert page.locator("#predictions-table tbody tr").count() == 50
    page.close()


def test_bad_uploads_get_the_clis_one_line_errors_on_the_page(page, demo):
    page.click("nav a[data-page=annotate]")
    not_h5ad = demo / "notes.h5ad"
    not_h5ad.write_text("not an h5ad")
    page.set_input_files("#a-file", not_h5ad)
    page.click("#annotate-form button[type=submit]")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error") == "notes.h5ad is not a readable .h5ad file"
    page.set_input_files("#a-file", demo / "query.h5ad")
    page.fill("#a-embedding", "")  # counts, but this store's cells come from no known model
    page.click("#annotate-form button[type=submit]")
    page.wait_for_selector("#error:not([hidden])")
    assert "(no known model), so query cells cannot be embedded" in page.inner_text("#error")
    big = demo / "big.h5ad"
    with open(big, "wb") as f:
        f.truncate(6 << 20)
    page.set_input_files("#a-file", big)
    page.click("#annotate-form button[type=submit]")
    page.wait_for_selector("#error:not([hidden])")
    assert "over the limit" in page.inner_text("#error")


def test_the_map_and_the_heatmap(page, demo, shots):
    page.click("nav a[data-page=look]")
    page.fill("#m-reference", "300")
    page.click("#map-button")
    page.wait_for_selector("#map .main-svg", timeout=MAP_MS)
    legend = page.locator("#map .legend").text_content()
    assert "query: CD14+ Monocyte" in legend and "reference: CD19+ B" in legend
    page.set_input_files("#x-file", demo / "query.h5ad")
    page.fill("#x-species", "human")  # the demo store holds one species: matched to itself
    page.fill("#x-against", "human")
    page.fill("#x-embedding", "X_pca")
    page.click("#match-form button[type=submit]")
    page.wait_for_selector("#heatmap .main-svg")
    assert "human query label" in page.locator("#heatmap").text_content()
    page.screenshot(path=shots / "look.png", full_page=True)


def test_sql_console_and_similar_cells(page, server, shots):
    page.click("nav a[data-page=ask]")
    sql = "SELECT cell_type, count(*) AS cells FROM cells GROUP BY 1 ORDER BY cells DESC, 1"
    page.fill("#sql", sql)
    page.click("#sql-form button[type=submit]")
    page.wait_for_selector("#sql-table table")
    api = httpx.post(server + "/sql", json={"sql": sql}, headers=_auth()).json()
    shown = _table(page, "#sql-table")
    assert [[label, int(_number(n))] for label, n in shown.values] == api["rows"]
    with page.expect_download() as info:
        page.click("#sql-csv")
    assert pd.read_csv(info.value.path()).values.tolist() == api["rows"]
    page.fill("#s-cell", f"reference/{read_pbmc().obs_names[1]}")  # [::4] went to the query
    page.fill("#s-k", "5")
    page.click("#similar-form button[type=submit]")
    page.wait_for_selector("#similar-table table")
    assert page.locator("#similar-table tbody tr").count() == 5
    page.screenshot(path=shots / "ask.png", full_page=True)


def test_keyboard_reaches_every_page(page):
    """The pages are real links and the forms real labelled inputs: Tab and Enter suffice."""
    page.goto(page.url.split("#")[0] + "#atlas")
    page.wait_for_selector("#datasets-table table")
    page.focus("nav a[data-page=ask]")
    page.keyboard.press("Enter")
    page.wait_for_selector("#page-ask:not([hidden])")
    for field in ("#a-file", "#a-k", "#sql", "#s-cell", "#x-species"):
        label = page.locator(f"label[for='{field[1:]}']")
        assert label.count() == 1, field


def test_screenshots_are_saved(shots):
    names = {p.name for p in shots.iterdir()}
    assert {"login.png", "atlas.png", "dataset.png", "annotate.png", "look.png", "ask.png"} <= names


# -- uploads of raw counts, on a store of the tiny model (the API the page calls, no browser) --


@pytest.fixture(scope="module")
def model_server(tmp_path_factory, tiny_model, tiny_model_dir):
    """60 PBMCs embedded with the tiny model as the store, served with that model."""
    import uceindex
    from uceindex.ingestion import ingest_embeddings

    pbmc = read_pbmc()[:60].copy()
    emb = uceindex.embed(pbmc, "human", model=tiny_model)
    uri = tmp_path_factory.mktemp("model_store") / "atlas"
    ingest_embeddings(
        uri, "pbmc", pbmc.obs[["cell_type"]], emb, "human", tiny_model.name, tiny_model.fingerprint
    )
    proc, url = _serve(uri, {"UCEINDEX_TOKEN": TOKEN}, args=["--model-dir", str(tiny_model_dir)])
    yield url
    proc.terminate()
    proc.wait(10)


def _job(url: str, path: Path, **fields) -> dict:
    r = _upload(url + "/jobs/annotate", path, fields)
    assert r.status_code == 202, r.text
    deadline = time.time() + SLOW_MS / 1000
    while (job := httpx.get(f"{url}/jobs/{r.json()['id']}", headers=_auth()).json())["state"] in (
        "queued",
        "running",
    ):
        assert time.time() < deadline, job
        time.sleep(0.2)
    return job


def test_a_raw_counts_upload_is_embedded_and_annotated_as_by_the_api(model_server, tmp_path):
    query = read_pbmc()[60:90].copy()
    query.write_h5ad(tmp_path / "counts.h5ad")
    job = _job(model_server, tmp_path / "counts.h5ad", k=5, species="human")
    assert job["state"] == "done" and job["stage"] == "writing"
    assert job["files"] == ["predictions.csv", "predictions.h5ad"]
    result = httpx.get(f"{model_server}/jobs/{job['id']}/result", headers=_auth()).json()
    api = _api_annotation(model_server, tmp_path / "counts.h5ad", k=5, species="human")
    assert result == api


def test_uploads_without_counts_or_of_another_model_fail_with_the_clis_line(
    model_server, tmp_path, pbmc_genes
):
    from uceindex.model.load import UCEModel
    from uceindex.model.tiny import write_tiny_model

    query = read_pbmc()[60:70].copy()
    query.X = query.X.astype(np.float32) / 3.0  # normalised: no raw counts anywhere
    query.write_h5ad(tmp_path / "normalised.h5ad")
    job = _job(model_server, tmp_path / "normalised.h5ad", k=5, species="human")
    assert job["state"] == "failed" and job["error"].startswith("no raw counts found")
    assert "\n" not in job["error"]
    other = write_tiny_model(tmp_path / "other", {"human": pbmc_genes[:700]}, seed=1)
    query = read_pbmc()[60:70].copy()
    query.obsm["X_uce"] = np.ones((query.n_obs, 16), dtype=np.float32)
    query.uns["uce"] = {"fingerprint": UCEModel(other).fingerprint}
    query.write_h5ad(tmp_path / "other.h5ad")
    job = _job(model_server, tmp_path / "other.h5ad", k=5, embedding_key="X_uce")
    assert job["state"] == "failed" and "made by model fingerprint" in job["error"]
    r = httpx.get(f"{model_server}/jobs/{job['id']}/result", headers=_auth())
    assert r.status_code == 409 and "made by model fingerprint" in r.json()["error"]["message"]


def test_job_ttl_and_root_path_are_set_on_the_command_line(demo, monkeypatch):
    """`--job-ttl` keeps results that long; `--root-path` is the prefix /docs is served under."""
    from fastapi.testclient import TestClient

    from tests.test_service import _serve_in_process

    result, served = _serve_in_process(
        monkeypatch, demo / "atlas", "--job-ttl", "90", "--root-path", "/atlas/"
    )
    assert result.exit_code == 0, result.output
    assert "127.0.0.1:8000/atlas/" in result.stderr
    app = served["app"]
    assert app.state.jobs.ttl_s == 90 and served["root_path"] == "/atlas"
    with TestClient(app, root_path="/atlas") as c:  # as uvicorn serves it behind the proxy
        assert c.get("/openapi.json").json()["servers"] == [{"url": "/atlas"}]
        assert 'src="web/app.js"' in c.get("/").text  # relative: works under the prefix


def test_a_refused_upload_leaves_no_job_behind(demo):
    from fastapi.testclient import TestClient

    from uceindex.service.app import create_app

    with TestClient(create_app(str(demo / "atlas"))) as c:
        with open(demo / "query.h5ad", "rb") as f:
            r = c.post("/jobs/annotate", files={"file": ("q.h5ad", f)}, data={"k": "0"})
        assert r.status_code == 400 and r.json()["error"]["message"].startswith("k must be")
        with open(demo / "query.h5ad", "rb") as f:
            r = c.post(
                "/jobs/annotate",
                files={"file": ("q.h5ad", f)},
                data={"k": "5", "embedding_key": "X_pca"},
            )
        assert r.status_code == 202
        jobs = c.app.state.jobs
        assert [p.name for p in jobs.root.iterdir()] == [r.json()["id"]]  # the refused one went
        deadline = time.time() + 60
        while jobs.get(r.json()["id"]).state != "done":
            assert time.time() < deadline
            time.sleep(0.1)
        left = sorted(p.name for p in (jobs.root / r.json()["id"]).iterdir())
        assert left == ["predictions.csv", "predictions.h5ad", "vectors.npy"]  # no upload kept
