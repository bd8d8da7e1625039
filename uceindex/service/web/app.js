// The uceindex web page: a thin face over the service's API. Every number it shows comes
// from a route (/atlas, /datasets/{id}, /jobs/..., /sql, /similar); it computes nothing.
// URLs are relative, so the page works under a reverse proxy's prefix.

const TOKEN_KEY = "uceindex.token"; // sessionStorage: asked once per browser tab
const JOB_KEY = "uceindex.jobs"; // localStorage: the last jobs, so a closed page finds them
const POLL_MS = 500;
const PAGE_ROWS = 50;
// plotly's qualitative "Plotly" and "D3" colours: one per label, the same for query and reference
const PALETTE = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692",
  "#b6e880", "#ff97ff", "#fecb52", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

const $ = (id) => document.getElementById(id);

// -- talking to the service ------------------------------------------------------------

class CallError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function call(path, { method = "GET", json, form } = {}) {
  const options = { method, headers: headers() };
  if (json !== undefined) {
    options.body = JSON.stringify(json);
    options.headers["Content-Type"] = "application/json";
  } else if (form) {
    options.body = form;
  }
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error.message;
    } catch (_) { /* not JSON: keep the status line */ }
    if (response.status === 401) showLogin(message);
    throw new CallError(response.status, message);
  }
  return response;
}

const getJson = async (path, options) => (await call(path, options)).json();

async function download(path, name) {
  const blob = await (await call(path)).blob();
  save(blob, name);
}

function save(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

let plotlyLoaded = null;
function plotly() {
  // plotly.js (4.8 MB) from the installed plotly package, behind the token: fetched only
  // when a chart is drawn.
  plotlyLoaded ??= (async () => {
    const code = await (await call("web/lib/plotly.min.js")).blob();
    const script = document.createElement("script");
    script.src = URL.createObjectURL(code);
    await new Promise((resolve, reject) => {
      script.onload = resolve;
      script.onerror = () => reject(new Error("plotly.js did not load"));
      document.head.append(script);
    });
    return window.Plotly;
  })();
  return plotlyLoaded;
}

// -- what the page shows -----------------------------------------------------------------

function showError(error) {
  const box = $("error");
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.textContent = error.message || String(error);
  box.hidden = false;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function text(value, digits) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") {
    if (digits !== undefined) return value.toFixed(digits);
    return Number.isInteger(value) ? value.toLocaleString("en") : value.toFixed(3);
  }
  return String(value);
}

// A table: sortable columns (header buttons), a filter box, pages of PAGE_ROWS rows.
// columns: [{key, title, link(row) -> href, num}]; rows: objects.
function table(container, columns, rows, { caption } = {}) {
  const state = { sort: null, desc: false, filter: "", page: 0 };
  const filterId = `${container.id}-filter`;
  const tools = el("div", { class: "table-tools" },
    el("label", { for: filterId }, "Filter"),
    el("input", { id: filterId, type: "search", oninput: (e) => { state.filter = e.target.value.toLowerCase(); state.page = 0; draw(); } }),
  );
  const counter = el("span", { class: "muted" });
  const prev = el("button", { type: "button", onclick: () => { state.page -= 1; draw(); } }, "Previous");
  const next = el("button", { type: "button", onclick: () => { state.page += 1; draw(); } }, "Next");
  tools.append(counter, prev, next);
  const wrap = el("div", { class: "table-wrap" });
  container.replaceChildren(tools, wrap);

  function draw() {
    let shown = rows;
    if (state.filter) {
      shown = rows.filter((r) => columns.some((c) => text(r[c.key]).toLowerCase().includes(state.filter)));
    }
    if (state.sort) {
      const key = state.sort;
      shown = [...shown].sort((a, b) => {
        const x = a[key], y = b[key];
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
        return state.desc ? -order : order;
      });
    }
    const pages = Math.max(1, Math.ceil(shown.length / PAGE_ROWS));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    const part = shown.slice(state.page * PAGE_ROWS, (state.page + 1) * PAGE_ROWS);
    counter.textContent = `${shown.length.toLocaleString("en")} rows` + (pages > 1 ? `, page ${state.page + 1} of ${pages}` : "");
    prev.hidden = next.hidden = pages === 1;
    prev.disabled = state.page === 0;
    next.disabled = state.page >= pages - 1;
    const head = el("tr", {}, ...columns.map((c) => el("th", {
      scope: "col",
      class: c.num ? "num" : undefined,
      "aria-sort": state.sort === c.key ? (state.desc ? "descending" : "ascending") : undefined,
    }, el("button", { type: "button", onclick: () => {
      state.desc = state.sort === c.key ? !state.desc : false;
      state.sort = c.key;
      draw();
    } }, c.title || c.key))));
    const body = part.map((r) => el("tr", {}, ...columns.map((c) => {
      const value = text(r[c.key], c.digits);
      const cell = c.link ? el("a", { href: c.link(r) }, value) : value;
      return el("td", { class: [c.num ? "num" : "", c.mark && c.mark(r) ? "novel" : ""].join(" ").trim() || undefined }, cell);
    })));
    wrap.replaceChildren(el("table", {}, caption ? el("caption", {}, caption) : null, el("thead", {}, head), el("tbody", {}, ...body)));
  }
  draw();
}

function columnsOf(names, numeric = []) {
  return names.map((key) => ({ key, num: numeric.includes(key) }));
}

// -- jobs ---------------------------------------------------------------------------------

function remember(kind, id) {
  const jobs = JSON.parse(localStorage.getItem(JOB_KEY) || "{}");
  jobs[kind] = id;
  localStorage.setItem(JOB_KEY, JSON.stringify(jobs));
}

function remembered(kind) {
  return JSON.parse(localStorage.getItem(JOB_KEY) || "{}")[kind] || null;
}

// Poll GET /jobs/{id} until it ends, showing its stage and progress in `box`; the result.
async function follow(id, box) {
  const bar = el("progress", { max: "1", value: "0", "aria-label": "Progress" });
  const line = el("span", { class: "muted", "aria-live": "polite" });
  const cancel = el("button", { type: "button", class: "link", onclick: () => call(`jobs/${id}`, { method: "DELETE" }) }, "Cancel");
  box.replaceChildren(el("div", { class: "job" }, bar, " ", line, " ", cancel));
  for (;;) {
    const job = await getJson(`jobs/${id}`);
    if (job.total) {
      bar.max = job.total;
      bar.value = job.done;
    } else {
      bar.removeAttribute("value");
    }
    const running = job.state === "running" && job.stage;
    line.textContent = `job ${id.slice(0, 8)}: ${job.state}` + (running ? `, ${job.stage}` : "") + (running && job.total > 1 ? ` ${job.done.toLocaleString("en")} of ${job.total.toLocaleString("en")}` : "");
    if (job.state === "done") {
      cancel.remove();
      bar.max = 1;
      bar.value = 1;
      return getJson(`jobs/${id}/result`);
    }
    if (job.state === "failed" || job.state === "cancelled") {
      cancel.remove();
      throw new Error(job.error || `the job was ${job.state}`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

// -- pages --------------------------------------------------------------------------------

async function atlasPage() {
  const atlas = await getJson("atlas");
  const model = atlas.model ? `${atlas.model.model_name}, ${atlas.model.embedding_dim}-d` : "no model yet";
  $("atlas-summary").textContent = `${atlas.cells.toLocaleString("en")} cells in ${atlas.datasets.length} data sets; model ${model}.`;
  $("atlas-label").textContent = atlas.label || "label (no cell_type column)";
  table($("datasets-table"), [
    { key: "dataset_id", title: "data set", link: (r) => `#dataset/${encodeURIComponent(r.dataset_id)}` },
    { key: "n_cells", title: "cells", num: true },
    { key: "n_rejected", title: "rejected", num: true },
    { key: "species" },
    { key: "model_name", title: "model" },
    { key: "created_at", title: "ingested" },
    { key: "status" },
  ], atlas.datasets);
  table($("counts-table"), [
    { key: "species" }, { key: "label", title: atlas.label || "label" }, { key: "cells", num: true },
  ], atlas.counts);
}

async function datasetPage(id) {
  const info = await getJson(`datasets/${encodeURIComponent(id)}`);
  const d = info.dataset;
  $("dataset-title").textContent = `Data set ${d.dataset_id}`;
  const facts = ["species", "n_cells", "n_embedded", "n_rejected", "n_genes", "genes_matched", "model_name", "embedding_source", "status", "created_at", "uceindex_version", "source_path"];
  $("dataset-facts").replaceChildren(el("dl", { class: "facts" }, ...facts.flatMap((k) => [el("dt", {}, k), el("dd", {}, text(d[k]))])));
  table($("dataset-columns"), [{ key: "name", title: "column" }, { key: "cells", title: "cells with a value", num: true }], info.obs_columns);
  table($("dataset-reasons"), [{ key: "reason" }, { key: "cells", num: true }], info.reasons, { caption: "Why cells were rejected" });
  table($("dataset-rejects"), [{ key: "obs_name", title: "cell" }, { key: "reason" }], info.rejects, { caption: "The first rejected cells" });
}

let annotateJob = null; // the job whose predictions are shown (and mapped)

async function showAnnotation(id, box) {
  const answer = await follow(id, box);
  annotateJob = id;
  const s = answer.summary;
  $("annotate-summary").textContent = `${s.cells.toLocaleString("en")} cells, ${s.label} from k = ${s.k} neighbours` +
    (s.where ? ` where ${s.where}` : "") + `; ${text(s.novel)} novel` + (s.not_searched ? `; ${s.not_searched} could not be embedded` : "") + "." +
    (s.warnings.length ? ` Warning: ${s.warnings.join(" ")}` : "");
  table($("annotate-counts"), [
    { key: "predicted" }, { key: "cells", num: true }, { key: "mean_confidence", title: "mean confidence", num: true, digits: 3 }, { key: "novel", num: true },
  ], s.labels, { caption: "Cells per predicted label" });
  table($("predictions-table"), [
    { key: "cell" }, { key: "predicted", title: "label" }, { key: "confidence", num: true, digits: 3 },
    { key: "runner_up", title: "runner-up" }, { key: "mean_similarity", title: "mean similarity", num: true, digits: 3 },
    { key: "novel", mark: (r) => r.novel },
  ], answer.predictions);
  $("annotate-result").hidden = false;
  $("map-note").textContent = `The ${s.cells.toLocaleString("en")} cells of the last annotation (job ${id.slice(0, 8)}) can be mapped among a sample of the reference.`;
  $("map-button").disabled = false;
}

async function annotatePage() {
  const last = remembered("annotate");
  if (last && annotateJob !== last) {
    try {
      await showAnnotation(last, $("annotate-job"));
    } catch (error) {
      if (error.status === 404) localStorage.removeItem(JOB_KEY);
      else throw error;
    }
  }
}

async function lookPage() {
  $("map-button").disabled = !annotateJob && !remembered("annotate");
}

async function drawMap(reference) {
  const parent = annotateJob || remembered("annotate");
  const job = await getJson(`jobs/${parent}/map?reference=${reference}`, { method: "POST" });
  remember("map", job.id);
  const answer = await follow(job.id, $("map-job"));
  const Plotly = await plotly();
  const labels = [...new Set(answer.cells.map((c) => c.label ?? "no label"))].sort();
  const colour = new Map(labels.map((l, i) => [l, PALETTE[i % PALETTE.length]]));
  const traces = [];
  for (const source of ["reference", "query"]) {
    for (const label of labels) {
      const cells = answer.cells.filter((c) => c.source === source && (c.label ?? "no label") === label);
      if (!cells.length) continue;
      const query = source === "query";
      traces.push({
        type: "scattergl", mode: "markers", name: `${source}: ${label}`, legendgroup: label,
        x: cells.map((c) => c.x), y: cells.map((c) => c.y),
        text: cells.map((c) => `${c.cell}<br>${label}${c.novel ? " (novel)" : ""}`),
        hoverinfo: "text",
        marker: {
          color: colour.get(label),
          size: query ? 9 : 5,
          opacity: query ? 1 : 0.6,
          symbol: cells.map((c) => (c.novel ? "x" : query ? "diamond" : "circle")),
          line: query ? { width: 1, color: "#111827" } : undefined,
        },
      });
    }
  }
  const box = $("map");
  box.classList.add("drawn");
  await Plotly.newPlot(box, traces, {
    title: { text: `Query cells (diamonds; novel: crosses) among reference cells (dots), coloured by ${answer.label}` },
    xaxis: { title: { text: "UMAP 1" } }, yaxis: { title: { text: "UMAP 2" } },
    legend: { font: { size: 11 } }, margin: { t: 48 },
  }, { responsive: true, displaylogo: false });
}

async function drawHeatmap(form) {
  const job = await getJson("jobs/match", { method: "POST", form });
  remember("match", job.id);
  const answer = await follow(job.id, $("match-job"));
  const m = answer.matrix;
  const Plotly = await plotly();
  const box = $("heatmap");
  box.classList.add("drawn");
  await Plotly.newPlot(box, [{
    type: "heatmap", z: m.shares, x: m.reference_labels, y: m.query_labels, colorscale: "Blues", reversescale: true, zmin: 0, zmax: 1,
    colorbar: { title: { text: "share" } },
    hovertemplate: `${answer.species} %{y}<br>${answer.against} %{x}<br>share %{z:.2f}<extra></extra>`,
  }], {
    title: { text: `${answer.species} cells vs ${answer.against} reference: share of each ${answer.species} label per predicted ${answer.against} label` },
    xaxis: { title: { text: `${answer.against} reference label` }, automargin: true },
    yaxis: { title: { text: `${answer.species} query label` }, automargin: true, autorange: "reversed" },
  }, { responsive: true, displaylogo: false });
}

let lastSql = null;

async function runSql(sql) {
  const result = await getJson("sql", { method: "POST", json: { sql } });
  lastSql = result;
  const rows = result.rows.map((r) => Object.fromEntries(result.columns.map((c, i) => [c, r[i]])));
  const numeric = result.columns.filter((c, i) => result.rows.length && typeof result.rows[0][i] === "number");
  table($("sql-table"), columnsOf(result.columns, numeric), rows);
  $("sql-info").textContent = `${result.rows.length.toLocaleString("en")} rows in ${result.elapsed_s.toFixed(3)} s` + (result.truncated ? " (truncated at the row limit)" : "");
  $("sql-csv").disabled = false;
}

function csv(columns, rows) {
  const quote = (v) => {
    if (v === null || v === undefined) return "";
    const s = typeof v === "object" ? JSON.stringify(v) : String(v);
    return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  return [columns, ...rows].map((r) => r.map(quote).join(",")).join("\n") + "\n";
}

async function findSimilar(cellId, k) {
  const answer = await getJson(`similar?cell_id=${encodeURIComponent(cellId)}&k=${k}`);
  const names = answer.neighbours.length ? Object.keys(answer.neighbours[0]) : ["rank", "cell_id", "similarity"];
  table($("similar-table"), columnsOf(names, ["rank", "similarity"]), answer.neighbours);
}

// -- navigation and login -----------------------------------------------------------------

const PAGES = { atlas: atlasPage, dataset: datasetPage, annotate: annotatePage, look: lookPage, ask: async () => {} };

function showPage(name) {
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${name}`;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === name || (name === "dataset" && link.dataset.page === "atlas")) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function showLogin(message) {
  $("nav").hidden = true;
  showPage("login");
  if (message && sessionStorage.getItem(TOKEN_KEY)) showError(new Error(message));
  sessionStorage.removeItem(TOKEN_KEY);
  $("token").focus();
}

async function route() {
  const [name, ...rest] = (location.hash.slice(1) || "atlas").split("/");
  const page = PAGES[name] ? name : "atlas";
  showError(null);
  $("nav").hidden = false;
  $("logout").hidden = !sessionStorage.getItem(TOKEN_KEY);
  showPage(page);
  try {
    await PAGES[page](decodeURIComponent(rest.join("/")));
  } catch (error) {
    if (error.status !== 401) showError(error);
  }
}

async function start() {
  const health = await (await fetch("health")).json();
  $("store-line").textContent = `${health.cells.toLocaleString("en")} cells, version ${health.version}`;
  window.addEventListener("hashchange", route);
  await route();
}

function on(id, event, handler) {
  $(id).addEventListener(event, async (e) => {
    e.preventDefault();
    showError(null);
    try {
      await handler(e);
    } catch (error) {
      if (error.status !== 401) showError(error);
    }
  });
}

on("login-form", "submit", async () => {
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  try {
    await getJson("atlas"); // a wrong token answers 401 and shows the form again
  } catch (error) {
    showError(error);
    return;
  }
  await route();
});

on("logout", "click", async () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin();
});

on("annotate-form", "submit", async (e) => {
  const form = new FormData(e.target);
  for (const [key, value] of [...form.entries()]) if (value === "") form.delete(key);
  $("annotate-result").hidden = true;
  const job = await getJson("jobs/annotate", { method: "POST", form });
  remember("annotate", job.id);
  await showAnnotation(job.id, $("annotate-job"));
});

document.querySelector(".downloads").addEventListener("click", async (e) => {
  const name = e.target.dataset.file;
  if (!name || !annotateJob) return;
  try {
    await download(`jobs/${annotateJob}/files/${name}`, name);
  } catch (error) {
    showError(error);
  }
});

on("map-form", "submit", (e) => drawMap(Number(new FormData(e.target).get("reference"))));

on("match-form", "submit", (e) => {
  const form = new FormData(e.target);
  for (const [key, value] of [...form.entries()]) if (value === "") form.delete(key);
  return drawHeatmap(form);
});

on("sql-form", "submit", () => runSql($("sql").value));

on("sql-csv", "click", () => {
  if (lastSql) save(new Blob([csv(lastSql.columns, lastSql.rows)], { type: "text/csv" }), "query.csv");
});

on("similar-form", "submit", (e) => {
  const form = new FormData(e.target);
  return findSimilar(form.get("cell_id"), form.get("k"));
});

start().catch(showError);
