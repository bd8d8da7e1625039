"""Embedding benchmark: sampler, model and memory, each beside the reference pipeline's way.

    python bench/embed.py [--quick] [--json out.json] [--device auto|cpu|cuda] [--threads N]

1. Sampler, one thread: uceindex's compiled `sample_sentences` on a CSR batch against the
   reference's `uce.eval_data.sample_cell_sentences`, called one cell at a time on a dense
   row as its data set class does. Target: >= 50x. The sampler gets its chunk as `embed`
   hands it over (`gather_columns`: columns in genomic order, canonical CSR); that step is
   timed on its own row, beside the sparse product and sort it replaced.
2. Model cells/s at the tiny and the official 4-layer and 33-layer shapes (random weights):
   the fast path (`Embedder`: length buckets, projected-token cache, bf16 on GPU) against the
   reference's way (float32, float padding mask, decoder on every position, batches in
   order padded to the batch maximum). Also 1 - cosine between them, bf16 against float32
   on GPU, and the resampling noise between two seeds for scale.
3. End to end: `uceindex.embed` on an AnnData (read, match, sample on threads ahead of the
   model, embed) against the model alone on the same cells' sentences, sampled beforehand, at
   the tiny and the official 4-layer widths. On CPU the model gets one torch thread fewer
   than the machine has cores, so the sampler has a core of its own. Target: >= 0.9x.
4. Memory: peak RSS of `uceindex.embed` on backed h5ad files of one and several chunks
   (1-layer tiny model: the data path is what is measured), each in a fresh process.

`--gpu-only` (bench/gpu_check.sh) measures the CUDA device alone: sampler, model, end to end.

Synthetic data: 20,000 genes on 25 chromosomes, 1,400-3,000 expressed per cell (mean
~2,200), negative-binomial counts (~60% of them 1). The token table is cut to the rows these genes use (20,029
instead of the official 145,469): only the rows used change the cost.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import tempfile
import types
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from _common import (
    base_parser,
    best_of,
    command_line,
    machine,
    machine_line,
    peak_rss_mb,
    print_table,
    reset_peak_rss,
    rss_mb,
    timer,
    utc_now,
    write_json,
)

import uceindex
from tests.reference_code import reference_module
from uceindex.embedding import CHUNK_CELLS, Embedder
from uceindex.io.genes import match_genes
from uceindex.model.network import PUBLISHED, UCE
from uceindex.model.tiny import tiny_config, write_tiny_model
from uceindex.model.vocab import CHROM_RIGHT, CLS, PAD
from uceindex.pipeline import default_threads
from uceindex.sentences import GeneOrder, gather_columns, sample_sentences

# -- settings (full, quick) -----------------------------------------------------------------
N_GENES = 20_000
# Relative gene counts of human chromosomes 1-22, X, Y, MT (protein-coding, rounded).
CHROM_SIZES = [2000, 1200, 1050, 750, 870, 1030, 900, 680, 770, 730, 1300, 1030, 320, 600, 590]
CHROM_SIZES += [850, 1180, 270, 1470, 540, 230, 440, 840, 60, 13]
EXPRESSED_PER_CELL = 2_250  # mean; each cell scales it by U(0.65, 1.35)
GENE_ROW0 = 4  # rows 0-3: PAD, CHROM_LEFT, CHROM_RIGHT, CLS
CHROM_ROW0 = GENE_ROW0 + N_GENES  # chromosome tokens follow the genes
TOKEN_ROWS = CHROM_ROW0 + len(CHROM_SIZES)
SEED = 0

# uceindex samples a whole chunk at once: time it on the chunk size that embed() uses.
SAMPLER_CELLS = {"ours": (CHUNK_CELLS, CHUNK_CELLS), "reference": (200, 40)}
SAMPLER_REPEATS = 3  # best of, against other work on the machine
SHAPES = {
    "tiny": dataclasses.replace(tiny_config(), n_tokens=TOKEN_ROWS),
    "4layer": dataclasses.replace(PUBLISHED["4layer"], n_tokens=TOKEN_ROWS),
    "33layer": dataclasses.replace(PUBLISHED["33layer"], n_tokens=TOKEN_ROWS),
}
MODEL_CELLS = {  # (device, shape) -> cells (full, quick); 0 = not run
    ("cpu", "tiny"): (512, 128),
    ("cpu", "4layer"): (6, 2),
    ("cpu", "33layer"): (2, 0),  # ~25 s a cell on 2 cores: full run only
    ("cuda", "tiny"): (4000, 1000),
    ("cuda", "4layer"): (2000, 400),
    ("cuda", "33layer"): (500, 100),
}
REF_BATCH = {  # the reference's batch sizes on an 80 GB GPU (docs/uce.md §8); small on CPU
    ("cpu", "tiny"): 25,
    ("cpu", "4layer"): 2,
    ("cpu", "33layer"): 2,
    ("cuda", "tiny"): 100,
    ("cuda", "4layer"): 100,
    ("cuda", "33layer"): 25,
}
MATMUL_N = {"cpu": 2048, "cuda": 8192}  # square matmul measured as the device's practical peak
BF16_PEAK_TFLOPS = {"H100 PCIe": 756, "H100": 989, "H200": 989, "A100": 312, "L4": 121}
MEMORY_CELLS = {"full": (CHUNK_CELLS, 4 * CHUNK_CELLS), "quick": (CHUNK_CELLS, 2 * CHUNK_CELLS)}
NO_GPU = "not measured: no GPU on this machine"
E2E_CELLS = {  # (device, shape) -> cells (full, quick)
    ("cpu", "tiny"): (2048, 512),
    ("cpu", "4layer"): (8, 3),
    ("cuda", "tiny"): (40_000, 8192),
    ("cuda", "4layer"): (16_384, 4096),
}
E2E_SIZES = {  # write_tiny_model sizes for the end-to-end model directories
    "tiny": {},
    "4layer": dict(token_dim=5120, d_model=1280, nhead=20, d_hid=5120, nlayers=4, output_dim=1280),
}


# -- data -----------------------------------------------------------------------------------
def make_genes(rng):
    """Chromosome code, start and expression probability of each gene, in no particular order."""
    p = np.array(CHROM_SIZES, float) / sum(CHROM_SIZES)
    chrom = rng.choice(len(CHROM_SIZES), N_GENES, p=p)
    starts = rng.integers(0, 250_000_000, N_GENES)
    weight, scale = rng.lognormal(0.0, 1.5, N_GENES), 1.0
    for _ in range(20):  # scale so that the capped probabilities sum to EXPRESSED_PER_CELL
        scale *= EXPRESSED_PER_CELL / np.minimum(0.95, weight * scale).sum()
    return chrom, starts, np.minimum(0.95, weight * scale)


def make_counts(rng, n_cells, expressed, block=500) -> sp.csr_matrix:
    """Cells x genes float64 CSR: genes switched on with their probability times a cell
    depth, counts 1 + negative binomial (about 60% of the values are 1, a long tail)."""
    parts = []
    for start in range(0, n_cells, block):
        b = min(block, n_cells - start)
        depth = rng.uniform(0.65, 1.35, (b, 1))
        on = rng.random((b, N_GENES)) < np.minimum(1.0, depth * expressed)
        rows, cols = np.nonzero(on)
        mean = 0.1 + 20 * expressed[cols] ** 3
        values = 1 + rng.negative_binomial(0.5, 0.5 / (0.5 + mean))
        parts.append(sp.csr_matrix((values.astype(np.float64), (rows, cols)), shape=on.shape))
    return sp.vstack(parts, format="csr")


def genomic(chrom, starts):
    """GeneOrder for uceindex and the column permutation that puts counts in that order."""
    tokens = GENE_ROW0 + np.arange(N_GENES)
    order = GeneOrder.genomic_order(tokens, CHROM_ROW0 + chrom, starts)
    return GeneOrder(tokens[order], CHROM_ROW0 + chrom[order]), order


# -- measurements ---------------------------------------------------------------------------
def reference_sampler(dense, chrom, starts):
    """The reference's per-cell path: dense int64 row -> log1p weights -> sample_cell_sentences."""
    args = types.SimpleNamespace(
        pad_length=1536,
        sample_size=1024,
        cls_token_idx=CLS,
        CHROM_TOKEN_OFFSET=CHROM_ROW0,
        chrom_token_right_idx=CHROM_RIGHT,
        pad_token_idx=PAD,
    )
    pe_rows = {"d": torch.arange(GENE_ROW0, GENE_ROW0 + N_GENES)}
    symbols = [f"GENE{i}" for i in range(N_GENES)]
    chroms = {"d": pd.Series(chrom.astype(np.int16), index=symbols)}  # like its cat.codes
    starts = {"d": starts}

    def run():
        sample_cell_sentences = reference_module("eval_data").sample_cell_sentences
        for row in dense:
            counts = torch.tensor(row).unsqueeze(0)
            weights = torch.log1p(counts)
            weights = weights / torch.sum(weights)
            sample_cell_sentences(counts, weights, "d", args, pe_rows, chroms, starts)

    return run


def fast_flops(c, length: float) -> float:
    """Model FLOPs of one cell on the fast path (the projected-token cache excluded)."""
    D, H, L = c.d_model, c.d_hid, length
    full_layer = 8 * L * D * D + 4 * L * D * H + 4 * L * L * D
    last_layer = 4 * L * D * D + 4 * D * D + 4 * L * D + 4 * D * H  # K, V for all; rest for CLS
    widths = (D, *c.decoder_widths)
    decoder = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
    return (c.nlayers - 1) * full_layer + last_layer + decoder


@torch.inference_mode()
def reference_model(net, tokens, lengths, batch, device):
    """Float32, batches in order, each padded to its longest sentence, float padding mask."""
    out = []
    for s in range(0, len(lengths), batch):
        width = int(lengths[s : s + batch].max())
        tok = torch.from_numpy(tokens[s : s + batch, :width]).to(device)
        lens = torch.from_numpy(lengths[s : s + batch]).to(device)
        out.append(net(tok, lens, mode="reference").cpu().numpy())
    return np.concatenate(out)


def matmul_tflops(device, dtype, n) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    a @ a
    seconds = best_of(lambda: (a @ a).sum().item(), 3)
    return 2 * n**3 / seconds / 1e12


def one_minus_cos(a, b):
    d = 1 - (a * b).sum(axis=1)
    return float(d.max()), float(d.mean())


def measure_model(device, shape, n, sentences):
    """cells/s of both paths, their agreement and the resampling noise, for one shape."""
    (tokens, lengths), (tokens1, lengths1) = ((t[:n], l[:n]) for t, l in sentences)
    config = SHAPES[shape]
    torch.manual_seed(SEED)
    with timer() as built:
        net = UCE(config).eval()
    holder = types.SimpleNamespace(network=net)
    row = {"device": device, "shape": shape, "cells": n, "build_s": round(built.seconds, 1)}
    fast = Embedder(holder, device=device, mode="fast")
    fast.embed_sentences(tokens1[:1], lengths1[:1])  # warm-up, other sentences
    reference_model(net, tokens1[:1], lengths1[:1], 1, device)
    with timer() as t_fast:
        emb_fast = fast.embed_sentences(tokens, lengths)
    with timer() as t_ref:
        emb_ref = reference_model(net, tokens, lengths, REF_BATCH[device, shape], device)
    row.update(
        precision=fast.precision,
        ref_batch=REF_BATCH[device, shape],
        fast_cells_s=n / t_fast.seconds,
        ref_cells_s=n / t_ref.seconds,
        fast_tflops=fast_flops(config, lengths.mean()) * n / t_fast.seconds / 1e12,
        length_min=int(lengths.min()),
        length_max=int(lengths.max()),
    )
    row["fast_vs_ref_1mcos_max"], row["fast_vs_ref_1mcos_mean"] = one_minus_cos(emb_fast, emb_ref)
    if device == "cuda":  # bf16 against float32, same path, same sentences
        f32 = Embedder(holder, device=device, mode="fast", precision="float32")
        emb_f32 = f32.embed_sentences(tokens, lengths)
        row["bf16_vs_f32_cos_min"] = float((emb_fast * emb_f32).sum(axis=1).min())
        row["f32_vs_ref_1mcos_max"], _ = one_minus_cos(emb_f32, emb_ref)
        del f32
    if device == "cuda" or shape != "33layer":  # the seeds' noise, for scale
        emb_seed1 = fast.embed_sentences(tokens1, lengths1)
        row["seed_noise_1mcos_mean"] = one_minus_cos(emb_fast, emb_seed1)[1]
    del fast, net, holder
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


def measure_e2e(device, shape, n, rng, expressed, workdir) -> dict:
    """uceindex.embed end to end against the model alone on the same cells' sentences."""
    import anndata as ad

    symbols = [f"GENE{i}" for i in range(N_GENES)]
    root = Path(workdir) / f"e2e-{shape}"
    model = uceindex.UCEModel(write_tiny_model(root, {"human": symbols}, **E2E_SIZES[shape]))
    counts = make_counts(rng, n, expressed)
    adata = ad.AnnData(X=counts.astype(np.float32), var=pd.DataFrame(index=symbols))
    match = match_genes(adata.var, model.vocab("human"))
    cut = Embedder(model, device=device)  # sentences and batches are the same for any embedder
    prepared = [cut.prepare(counts[s : s + CHUNK_CELLS], match) for s in range(0, n, CHUNK_CELLS)]
    uceindex.embed(adata[:64].copy(), "human", model=model, device=device)  # warm-up: kernels
    with timer() as t_model:  # a fresh embedder, as embed() makes: its projection cache included
        embedder = Embedder(model, device=device)
        for chunk in prepared:
            embedder.embed_prepared(chunk)
        if device == "cuda":
            torch.cuda.synchronize()
    with timer() as t_e2e:
        uceindex.embed(adata, "human", model=model, device=device)
    with timer() as t_serial:
        uceindex.embed(adata, "human", model=model, device=device, threads=0)
    del embedder, cut, prepared, model
    return {
        "device": device,
        "shape": shape,
        "cells": n,
        "torch_threads": torch.get_num_threads(),
        "sampler_threads": default_threads(),
        "model_only_cells_s": n / t_model.seconds,
        "e2e_cells_s": n / t_e2e.seconds,
        "e2e_no_threads_cells_s": n / t_serial.seconds,
        "e2e_vs_model": t_model.seconds / t_e2e.seconds,
    }


def memory_child(model_dir, h5ad) -> dict:
    """In a fresh process: embed a backed h5ad, report RSS before and the peak during it."""
    import anndata as ad

    import uceindex

    torch.set_num_threads(1)  # the tiny model's speed is not the point; spare a busy machine
    model = uceindex.UCEModel(model_dir)
    adata = ad.read_h5ad(h5ad, backed="r")
    before, reset = rss_mb(), reset_peak_rss()
    with timer() as t:
        out = uceindex.embed(adata, "human", model=model)
    return {
        "cells": adata.n_obs,
        "embedded": int((~np.isnan(out[:, 0])).sum()),
        "seconds": t.seconds,
        "rss_before_mb": before,
        "peak_rss_mb": peak_rss_mb(),
        "peak_is_during_embed": reset,  # else since the process started
    }


def measure_memory(rng, sizes, expressed, workdir):
    import anndata as ad

    from uceindex.model.tiny import write_tiny_model

    symbols = [f"GENE{i}" for i in range(N_GENES)]
    model_dir = write_tiny_model(Path(workdir) / "model", {"human": symbols}, nlayers=1)
    X = make_counts(rng, max(sizes), expressed).astype(np.float32)
    rows = []
    for n in sizes:
        path = Path(workdir) / f"cells{n}.h5ad"
        ad.AnnData(X=X[:n], var=pd.DataFrame(index=symbols)).write_h5ad(path)
        with mp.get_context("spawn").Pool(1) as pool:
            r = pool.apply(memory_child, (str(model_dir), str(path)))
        r.update(
            chunks=-(-n // CHUNK_CELLS),
            nnz=int(X[:n].nnz),
            file_mb=path.stat().st_size / 2**20,
            dense_int64_mb=n * N_GENES * 8 / 2**20,  # what the reference writes first
        )
        rows.append(r)
        path.unlink()
    return rows


# -- run ------------------------------------------------------------------------------------
def main():
    parser = base_parser(__doc__)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, help="torch threads for the model (default: all)")
    parser.add_argument("--gpu-only", action="store_true", help="CUDA only: no CPU, no memory")
    opts = parser.parse_args()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    pick = 1 if opts.quick else 0
    has_gpu = torch.cuda.is_available()
    if opts.device == "cuda" and not has_gpu:
        parser.error("no CUDA device here: use --device cpu")
    devices = {"auto": ["cpu"] + ["cuda"] * has_gpu, "cpu": ["cpu"], "cuda": ["cuda"]}[opts.device]
    if opts.gpu_only:
        if not has_gpu:
            parser.error("--gpu-only needs a CUDA device")
        devices = ["cuda"]
    threads = torch.get_num_threads()
    result = {"benchmark": "embed", "command": command_line(), "date": utc_now()}
    result["machine"], result["quick"] = machine(), opts.quick
    print(f"{result['date']}  {machine_line(result['machine'])}, model on {threads} threads")

    rng = np.random.default_rng(SEED)
    chrom, starts, expressed = make_genes(rng)
    genes, order = genomic(chrom, starts)
    n_ours, n_ref = (v[pick] for v in SAMPLER_CELLS.values())
    counts = make_counts(rng, n_ours, expressed)
    target = np.empty(N_GENES, np.int64)
    target[order] = np.arange(N_GENES)  # input column -> its place in genomic order
    in_order = gather_columns(counts, target, N_GENES)  # the sampler's input, as embed makes it
    ones = float((counts.data == 1).mean())
    print(f"data: {counts.nnz / n_ours:.0f} genes/cell, {ones:.0%} of counts are 1")

    # 1. Sampler, one thread.
    torch.set_num_threads(1)
    t_ours = best_of(lambda: sample_sentences(in_order, genes, SEED), SAMPLER_REPEATS)
    t_gather = best_of(lambda: gather_columns(counts, target, N_GENES), SAMPLER_REPEATS)
    combiner = sp.csr_matrix(
        (np.ones(N_GENES), (order, np.arange(N_GENES))), shape=(N_GENES, N_GENES)
    )
    t_product = best_of(lambda: sp.csr_matrix(counts @ combiner).sort_indices(), SAMPLER_REPEATS)
    np.random.seed(SEED)
    dense = counts[:n_ref].toarray().astype(np.int64)
    t_ref = best_of(reference_sampler(dense, chrom, starts), SAMPLER_REPEATS)
    torch.set_num_threads(threads)
    sampler = {
        "cells_ours": n_ours,
        "cells_reference": n_ref,
        "genes_per_cell": counts.nnz / n_ours,
        "ours_cells_s": n_ours / t_ours,
        "reference_cells_s": n_ref / t_ref,
        "gather_cells_s": n_ours / t_gather,  # input columns -> genomic order, canonical
        "product_sort_cells_s": n_ours / t_product,  # the same as a sparse product and a sort
    }
    sampler["ratio"] = sampler["ours_cells_s"] / sampler["reference_cells_s"]
    result["sampler"] = sampler

    # 2. Model, per device and shape.
    sentences = [sample_sentences(in_order[:2000], genes, s) for s in (SEED, SEED + 1)]
    result["model"] = []
    for device in devices:
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        result["matmul_tflops_" + device] = matmul_tflops(device, dtype, MATMUL_N[device])
        for shape in SHAPES:
            n = MODEL_CELLS[device, shape][pick]
            if n == 0:
                result["model"].append({"device": device, "shape": shape, "skipped": "quick"})
                continue
            if n > len(sentences[0][1]):
                more = make_counts(rng, n, expressed)[:, order].tocsr()
                sentences = [sample_sentences(more, genes, s) for s in (SEED, SEED + 1)]
            print(f"model: {device} {shape}, {n} cells ...", flush=True)
            row = measure_model(device, shape, n, sentences)
            row["e2e_ours_cells_s"] = 1 / (1 / row["fast_cells_s"] + 1 / sampler["ours_cells_s"])
            row["e2e_ref_cells_s"] = 1 / (1 / row["ref_cells_s"] + 1 / sampler["reference_cells_s"])
            result["model"].append(row)

    # 3. End to end against the model alone; on CPU the sampler gets a core of its own.
    result["e2e"] = []
    with tempfile.TemporaryDirectory() as workdir:
        for device in devices:
            if device == "cpu":
                torch.set_num_threads(max(1, threads - 1))
            for shape in E2E_SIZES:
                n = E2E_CELLS[device, shape][pick]
                print(f"end to end: {device} {shape}, {n} cells ...", flush=True)
                result["e2e"].append(measure_e2e(device, shape, n, rng, expressed, workdir))
            torch.set_num_threads(threads)

    # 4. Memory: backed h5ad through uceindex.embed, a fresh process per size.
    result["memory"] = []
    if not opts.gpu_only:
        print("memory ...", flush=True)
        with tempfile.TemporaryDirectory() as workdir:
            sizes = MEMORY_CELLS["quick" if opts.quick else "full"]
            result["memory"] = measure_memory(rng, sizes, expressed, workdir)

    result["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    result["settings"] = {
        "genes": N_GENES, "token_rows": TOKEN_ROWS, "chunk_cells": CHUNK_CELLS,
        "sampler_repeats": SAMPLER_REPEATS, "torch_threads_model": threads,
    }  # fmt: skip
    report(result, has_gpu)
    write_json(opts.json, result)


def report(result, has_gpu):
    s = result["sampler"]
    print_table(
        f"Sampler, 1 thread ({s['genes_per_cell']:.0f} expressed genes/cell of {N_GENES:,})",
        ["sampler", "cells", "cells/s", "vs reference", "target"],
        [
            ["uceindex sample_sentences (batch)", s["cells_ours"], f"{s['ours_cells_s']:,.0f}",
             f"{s['ratio']:.1f}x", ">= 50x"],
            ["reference sample_cell_sentences (per cell)", s["cells_reference"],
             f"{s['reference_cells_s']:,.0f}", "1x", ""],
            ["before sampling: gather_columns (genomic order)", s["cells_ours"],
             f"{s['gather_cells_s']:,.0f}", "", ""],
            ["before sampling, as it was: sparse product + sort", s["cells_ours"],
             f"{s['product_sort_cells_s']:,.0f}", "", ""],
        ],
    )  # fmt: skip
    gpu_peak = next(
        (v for k, v in BF16_PEAK_TFLOPS.items() if k in (result["machine"]["gpu"] or "")), None
    )
    rows, agree = [], []
    for r in result["model"]:
        if "skipped" in r:
            rows.append([r["device"], r["shape"], "", "", "", "", "", "", "skipped in --quick"])
            continue
        peak = result["matmul_tflops_" + r["device"]]
        eff = f"{r['fast_tflops']:.3g} ({r['fast_tflops'] / peak:.0%} of matmul"
        eff += (
            f", {r['fast_tflops'] / gpu_peak:.0%} of spec)"
            if r["device"] == "cuda" and gpu_peak
            else ")"
        )
        rows.append([
            r["device"], r["shape"], r["cells"], f"{r['fast_cells_s']:,.2f} ({r['precision']})",
            f"{r['ref_cells_s']:,.2f} (batch {r['ref_batch']})",
            f"{r['fast_cells_s'] / r['ref_cells_s']:.2f}x",
            f"{r['e2e_ours_cells_s'] / r['e2e_ref_cells_s']:.2f}x", eff,
            f"L {r['length_min']}-{r['length_max']}",
        ])  # fmt: skip
        agree.append([
            r["device"], r["shape"], r["cells"],
            f"{r['fast_vs_ref_1mcos_max']:.1e} / {r['fast_vs_ref_1mcos_mean']:.1e}",
            f"{r['bf16_vs_f32_cos_min']:.5f}" if "bf16_vs_f32_cos_min" in r else "n/a (float32 on CPU)",
            f"{r['seed_noise_1mcos_mean']:.1e}" if "seed_noise_1mcos_mean" in r else "not run",
        ])  # fmt: skip
    if not has_gpu:
        rows.append(["cuda", "all", "", "", "", "", "", "", NO_GPU])
        agree.append(["cuda", "all", "", NO_GPU, "", ""])
    print_table(
        "Model cells/s (random weights; token table cut to the rows used)",
        ["device", "shape", "cells", "uceindex fast", "reference way", "speed-up",
         "e2e speed-up", "fast TFLOP/s", "note"],
        rows,
    )  # fmt: skip
    print_table(
        "Agreement, 1 - cosine (max / mean)",
        ["device", "shape", "cells", "fast vs reference", "bf16 vs f32 (min cos)",
         "seed 0 vs 1 (mean)"],
        agree,
    )  # fmt: skip
    print_table(
        "End to end: uceindex.embed against the model alone on the same sentences",
        ["device", "shape", "cells", "torch threads", "model only cells/s", "e2e cells/s",
         "e2e / model", "e2e without threads", "target"],
        [[e["device"], e["shape"], e["cells"], e["torch_threads"],
          f"{e['model_only_cells_s']:,.1f}", f"{e['e2e_cells_s']:,.1f}",
          f"{e['e2e_vs_model']:.2f}x", f"{e['e2e_no_threads_cells_s']:,.1f}", ">= 0.9x"]
         for e in result["e2e"]],
    )  # fmt: skip
    print_table(
        "Memory: uceindex.embed on a backed h5ad (tiny 1-layer model), fresh process per size",
        ["cells", "chunks", "seconds", "RSS before MiB", "peak RSS MiB", "peak - before",
         "reference dense int64 MiB"],
        [[m["cells"], m["chunks"], f"{m['seconds']:.1f}", f"{m['rss_before_mb']:.0f}",
          f"{m['peak_rss_mb']:.0f}", f"{m['peak_rss_mb'] - m['rss_before_mb']:.0f}",
          f"{m['dense_int64_mb']:,.0f}"] for m in result["memory"]],
    )  # fmt: skip


if __name__ == "__main__":
    main()
