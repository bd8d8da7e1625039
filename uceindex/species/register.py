"""Add a species to a model directory, beside the official files, and list its species.

`add_species` writes (docs/uce.md §7; names follow the official notebook):

    <model_dir>/species/<name>/<name>.gene_symbol_to_embedding_ESM2.pt  gene symbol -> tensor[token_dim]
    <model_dir>/species/<name>/<name>_to_chrom_pos.csv                  gene_symbol, chromosome, start, species
    <model_dir>/species/<name>/species.json                             how the files were made
    <model_dir>/new_species_protein_embeddings.csv                     one row: species, path, chrom_csv, taxonomy_id

and nothing else: the official files are only read. The loader (`uceindex.model.load`)
appends the species' gene tokens after the checkpoint's token table, in the key order of the
.pt dict (sorted symbols, as SATURN writes them), then one chromosome token per distinct
chromosome of the CSV drawn with `torch.manual_seed(taxonomy_id)` and
`torch.normal(0, 1, (n_chrom, token_dim))`; so anyone who registers the same species with the
same taxonomy id gets the same tokens.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from uceindex.atomic import written_whole
from uceindex.errors import InputDataError, ModelFilesError, UceIndexError
from uceindex.model.files import (
    NEW_SPECIES_CSV,
    PROTEIN_EMBEDDING_SUFFIX,
    TRAINING_SPECIES,
    ModelFiles,
    protein_embedding_file,
    read_offsets,
)
from uceindex.model.load import load_tensors, refusal
from uceindex.species.esm import (
    MAX_RESIDUES,
    EsmStats,
    Progress,
    ProteinCache,
    embed_proteins,
    gene_embeddings,
    load_esm,
)
from uceindex.species.esm_numerics import DEFAULT_PRECISION
from uceindex.species.fasta import Proteome, read_proteome

SPECIES_DIR = "species"  # <model_dir>/species/<name>/
META_FILE = "species.json"
CACHE_DIR = (
    "esm_cache"  # finished proteins of an interrupted run; removed once the species is added
)
LISTING_COLUMNS = ["species", "path", "chrom_csv", "taxonomy_id"]
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*\Z")  # a species name is also a folder name


@dataclass
class AddReport:
    """What `add_species` wrote and how many genes the model can now use."""

    species: str
    taxonomy_id: int
    directory: Path
    source: str  # "esm" or "precomputed"
    source_file: str
    token_dim: int
    genes: int  # token rows: genes in the .pt dict
    genes_placed: int  # of those, genes with a chromosome and start: the vocabulary
    chromosomes: int  # chromosome tokens
    proteome: dict = field(default_factory=dict)
    esm: dict | None = None
    replaced: bool = False

    def as_dict(self) -> dict:
        return {
            "species": self.species,
            "taxonomy_id": self.taxonomy_id,
            "directory": str(self.directory),
            "source": self.source,
            "source_file": self.source_file,
            "token_dim": self.token_dim,
            "genes": self.genes,
            "genes_placed": self.genes_placed,
            "chromosomes": self.chromosomes,
            "proteome": self.proteome,
            "esm": self.esm,
            "replaced": self.replaced,
        }


def checkpoint_token_dim(files: ModelFiles) -> int:
    """Width of the checkpoint's gene tokens (5120 for the official models)."""
    try:
        state = load_tensors(files.checkpoint)
        return int(state["pe_embedding.weight"].shape[1])
    except Exception as exc:
        raise ModelFilesError(
            f"cannot read the token width of {files.checkpoint.name} ({refusal(exc)}): "
            "download it again"
        ) from None


def _official(files: ModelFiles) -> list[str]:
    """Training species this directory serves, as the loader sees them."""
    return [s for s in TRAINING_SPECIES if s in read_offsets(files.offsets)]


def _listing(root: Path) -> pd.DataFrame:
    path = root / NEW_SPECIES_CSV
    if not path.exists():
        return pd.DataFrame(columns=LISTING_COLUMNS)
    listing = pd.read_csv(path)
    if "species" not in listing.columns:
        raise ModelFilesError(f"{path} has no species column: fix or remove it")
    for column in LISTING_COLUMNS:
        if column not in listing.columns:
            listing[column] = pd.NA
    return listing


def _digest(sequences: dict[str, str]) -> str:
    h = hashlib.sha256()
    for pid in sorted(sequences):
        h.update(f"{pid}\t{sequences[pid]}\n".encode())
    return h.hexdigest()[:16]


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _reads_back(name: str) -> bool:
    """Whether the loader's pd.read_csv gives the name back as this string (not NaN, not a number)."""
    value = pd.read_csv(io.StringIO(f"species\n{name}\n"))["species"].iloc[0]
    return isinstance(value, str) and value == name


def _check_name(name: str, files: ModelFiles, listing: pd.DataFrame, replace: bool) -> bool:
    """Refuse a bad or taken name; returns whether an added species of that name is replaced."""
    if not NAME_RE.match(name) or not _reads_back(name):
        raise InputDataError(
            f"species name {name!r} must start with a letter, then letters, digits, '_', '-' "
            "or '.', and not be a word pandas reads as missing (NA, null...); e.g. chicken"
        )
    if name in TRAINING_SPECIES or name in _official(files):
        raise InputDataError(
            f"{name!r} is an official species of this model; pick another name "
            "(the official files are never changed)"
        )
    taken = name in set(listing["species"].astype(str))
    if taken and not replace:
        raise InputDataError(
            f"species {name!r} is already registered in {files.root / NEW_SPECIES_CSV}: "
            "pass --replace to overwrite it"
        )
    return taken


def _precomputed(path: Path, token_dim: int) -> dict[str, torch.Tensor]:
    """A gene symbol -> 1-D tensor dict, checked: same width as the checkpoint, finite."""
    if not path.is_file():
        raise InputDataError(f"no protein embeddings file at {path}")
    try:
        data = load_tensors(path)
    except Exception as exc:
        raise InputDataError(
            f"cannot read {path.name} as a torch file of tensors ({refusal(exc)})"
        ) from None
    if not isinstance(data, dict) or not data:
        raise InputDataError(f"{path.name} must hold a dict gene symbol -> tensor")
    shapes = {tuple(v.shape) if isinstance(v, torch.Tensor) else None for v in data.values()}
    if len(shapes) != 1 or None in shapes or len(next(iter(shapes))) != 1:
        found = ", ".join(sorted(map(str, shapes))[:3])
        raise InputDataError(
            f"{path.name} must map each gene symbol to a 1-D tensor of one width (found {found})"
        )
    (width,) = next(iter(shapes))
    if width != token_dim:
        raise InputDataError(
            f"{path.name} holds {width}-d gene embeddings but this UCE checkpoint takes "
            f"{token_dim}-d gene tokens: the official checkpoints need ESM-2 15B "
            "(esm2_t48_15B_UR50D, 5120-d)"
        )
    genes = {str(k): v.detach().to(torch.float32).clone() for k, v in data.items()}
    bad = [k for k, v in genes.items() if not torch.isfinite(v).all()]
    if bad:
        raise InputDataError(
            f"{path.name} has non-finite values for {len(bad)} genes (e.g. {bad[0]})"
        )
    return genes


@dataclass
class GeneTokens:
    """A species' gene tokens and the positions of its genes: what `register_species` writes."""

    genes: dict[str, torch.Tensor]  # gene symbol -> float32 token, in the order written
    proteome: Proteome  # gives each gene its chromosome and start
    proteome_file: Path
    source: str  # "esm" or "precomputed"
    source_file: Path
    genes_placed: int  # genes with a position: the species' vocabulary
    max_residues: int = MAX_RESIDUES
    esm: EsmStats | None = None


def _check_taxonomy_id(taxonomy_id) -> None:
    if isinstance(taxonomy_id, bool) or not isinstance(taxonomy_id, int) or taxonomy_id <= 0:
        raise InputDataError(
            f"taxonomy id must be a positive NCBI Taxonomy id (chicken: 9031), not {taxonomy_id!r}"
        )


def _species_dir(files: ModelFiles, name: str) -> Path:
    return files.root / SPECIES_DIR / name


def _esm_genes(
    proteome: Proteome,
    proteome_file: Path,
    weights: Path,
    token_dim: int,
    cache_dir: Path | None,
    *,
    device,
    precision: str,
    tokens_per_batch: int | None,
    max_residues: int,
    progress: Progress | None,
) -> tuple[dict[str, torch.Tensor], EsmStats]:
    """Gene symbol -> mean ESM-2 embedding of its proteins (the SATURN recipe), resumable
    through `cache_dir`."""
    model, alphabet = load_esm(weights, expect_width=token_dim, device=device, precision=precision)
    gene_proteins = proteome.gene_proteins()
    all_sequences = proteome.sequences()
    sequences = {pid: all_sequences[pid] for ids in gene_proteins.values() for pid in ids}
    if not sequences:
        raise InputDataError(f"no protein of {proteome_file.name} can be embedded")
    meta = {
        "weights": weights.name,
        "weights_bytes": weights.stat().st_size,
        "width": token_dim,
        "max_residues": max_residues,
        "sequences_sha256": _digest(sequences),  # same proteins, same cache
    }
    try:
        proteins, stats = embed_proteins(
            sequences,
            model,
            alphabet,
            max_residues=max_residues,
            tokens_per_batch=tokens_per_batch,
            cache=ProteinCache(cache_dir, meta) if cache_dir is not None else None,
            progress=progress,
        )
    except torch.cuda.OutOfMemoryError:
        raise UceIndexError(
            "the GPU ran out of memory (finished proteins are cached): run again with a "
            "lower --batch-tokens, or --precision float16"
        ) from None
    stats.weights = weights.name
    del model
    genes = gene_embeddings(gene_proteins, proteins)
    bad = [s for s, v in genes.items() if not torch.isfinite(v).all()]
    if bad:
        if cache_dir is not None:
            shutil.rmtree(cache_dir, ignore_errors=True)  # do not resume from broken values
        raise InputDataError(
            f"ESM gave non-finite values for {len(bad)} genes (e.g. {bad[0]}) in {precision}: "
            "rerun with --precision float32"
        )
    return genes, stats


def gene_tokens(
    proteome: str | os.PathLike,
    token_dim: int,
    *,
    esm_weights: str | os.PathLike | None = None,
    protein_embeddings: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | None = None,
    precision: str = DEFAULT_PRECISION,
    tokens_per_batch: int | None = None,
    max_residues: int = MAX_RESIDUES,
    progress: Progress | None = None,
) -> GeneTokens:
    """Step one of `add_species`: read the proteome, then the gene tokens, from ESM-2 run on its
    proteins (`esm_weights`, resumable through `cache_dir`) or from a precomputed .pt dict
    (`protein_embeddings`), checked to have `token_dim` and positions in the proteome."""
    if (esm_weights is None) == (protein_embeddings is None):
        raise InputDataError("pass exactly one of --esm-weights and --protein-embeddings")
    proteome_file = Path(proteome).expanduser()
    parsed = read_proteome(proteome)
    if parsed.summary.genes == 0:
        raise InputDataError(
            f"no protein in {proteome_file.name} has both a gene_symbol and a chromosome "
            "location: pass an Ensembl *.pep.all.fa file"
        )
    stats = None
    if protein_embeddings is not None:
        source_file = Path(protein_embeddings).expanduser()
        genes = _precomputed(source_file, token_dim)
    else:
        source_file = Path(esm_weights).expanduser()
        genes, stats = _esm_genes(
            parsed,
            proteome_file,
            source_file,
            token_dim,
            None if cache_dir is None else Path(cache_dir),
            device=device,
            precision=precision,
            tokens_per_batch=tokens_per_batch,
            max_residues=max_residues,
            progress=progress,
        )
    placed = set(parsed.positions["gene_symbol"].str.upper())
    n_placed = sum(1 for s in dict.fromkeys(k.upper() for k in genes) if s in placed)
    if n_placed == 0:
        raise InputDataError(
            f"none of the {len(genes)} genes of {source_file.name} has a position in "
            f"{proteome_file.name}: are they the same species and assembly?"
        )
    return GeneTokens(
        genes=genes,
        proteome=parsed,
        proteome_file=proteome_file,
        source="precomputed" if protein_embeddings is not None else "esm",
        source_file=source_file,
        genes_placed=n_placed,
        max_residues=max_residues,
        esm=stats,
    )


def register_species(
    name: str,
    tokens: GeneTokens,
    *,
    taxonomy_id: int,
    model_dir: str | os.PathLike | None = None,
    replace: bool = False,
) -> AddReport:
    """Step two of `add_species`: write the species' token file, gene positions and
    species.json under species/<name>/, each whole, then list it in
    new_species_protein_embeddings.csv, where the loader finds it."""
    _check_taxonomy_id(taxonomy_id)
    files = ModelFiles.find(model_dir)
    root = files.root
    listing = _listing(root)
    replaced = _check_name(name, files, listing, replace)
    token_dim = checkpoint_token_dim(files)
    width = int(next(iter(tokens.genes.values())).shape[0])
    if width != token_dim:
        raise InputDataError(
            f"the gene tokens of {name} are {width}-d but this UCE checkpoint takes "
            f"{token_dim}-d gene tokens"
        )
    directory = _species_dir(files, name)
    directory.mkdir(parents=True, exist_ok=True)
    pt = directory / f"{name}{PROTEIN_EMBEDDING_SUFFIX}"
    chrom_csv = directory / f"{name}_to_chrom_pos.csv"
    positions = tokens.proteome.positions
    positions = positions.assign(
        gene_symbol=positions["gene_symbol"].str.upper(), species=name
    ).sort_values(["chromosome", "start"], kind="stable")
    with written_whole(pt) as scratch:
        torch.save(tokens.genes, scratch)
    with written_whole(chrom_csv) as scratch:
        positions.to_csv(scratch, index=False)
    report = AddReport(
        species=name,
        taxonomy_id=taxonomy_id,
        directory=directory,
        source=tokens.source,
        source_file=str(tokens.source_file),
        token_dim=token_dim,
        genes=len(tokens.genes),
        genes_placed=tokens.genes_placed,
        chromosomes=tokens.proteome.summary.chromosomes,
        proteome={"file": str(tokens.proteome_file), **tokens.proteome.summary.as_dict()},
        esm=tokens.esm.as_dict() if tokens.esm else None,
        replaced=replaced,
    )
    meta = {
        **report.as_dict(),
        "rules": {
            "gene_embedding": "mean over the gene's proteins of the mean of ESM's last layer "
            "over residues (SATURN)",
            "long_proteins": f"truncated to the first {tokens.max_residues} residues",
            "gene_start": "lowest start of the gene's proteins on the chromosome of its first "
            "located protein",
        },
    }
    with written_whole(directory / META_FILE) as scratch:
        scratch.write_text(json.dumps(meta, indent=2) + "\n")

    row = {
        "species": name,
        "path": _relative(pt, root),
        "chrom_csv": _relative(chrom_csv, root),
        "taxonomy_id": taxonomy_id,
    }
    listing = listing[listing["species"].astype(str) != name]
    listing = pd.concat([listing, pd.DataFrame([row])], ignore_index=True)
    listing["taxonomy_id"] = pd.to_numeric(listing["taxonomy_id"], errors="coerce").astype("Int64")
    with written_whole(root / NEW_SPECIES_CSV) as scratch:
        listing.to_csv(scratch, index=False)
    shutil.rmtree(directory / CACHE_DIR, ignore_errors=True)
    return report


def add_species(
    name: str,
    proteome: str | os.PathLike,
    *,
    taxonomy_id: int,
    model_dir: str | os.PathLike | None = None,
    esm_weights: str | os.PathLike | None = None,
    protein_embeddings: str | os.PathLike | None = None,
    replace: bool = False,
    device: str | None = None,
    precision: str = DEFAULT_PRECISION,
    tokens_per_batch: int | None = None,
    max_residues: int = MAX_RESIDUES,
    progress: Progress | None = None,
) -> AddReport:
    """Register species `name` from an Ensembl proteome, so that `embed(..., species=name)` works.

    Gene tokens come from `esm_weights` (a fair-esm ESM-2 file; run here, resumable) or from
    `protein_embeddings` (a precomputed .pt dict gene symbol -> tensor), exactly one of the
    two. Their width must equal the checkpoint's token width. `taxonomy_id` (NCBI) seeds the
    chromosome tokens. An added species of the same name is refused unless `replace`; an
    official one always is. Cheap checks all run before ESM does."""
    if (esm_weights is None) == (protein_embeddings is None):
        raise InputDataError("pass exactly one of --esm-weights and --protein-embeddings")
    _check_taxonomy_id(taxonomy_id)
    files = ModelFiles.find(model_dir)
    token_dim = checkpoint_token_dim(files)
    _check_name(name, files, _listing(files.root), replace)
    tokens = gene_tokens(
        proteome,
        token_dim,
        esm_weights=esm_weights,
        protein_embeddings=protein_embeddings,
        cache_dir=_species_dir(files, name) / CACHE_DIR,
        device=device,
        precision=precision,
        tokens_per_batch=tokens_per_batch,
        max_residues=max_residues,
        progress=progress,
    )
    return register_species(
        name, tokens, taxonomy_id=taxonomy_id, model_dir=files.root, replace=replace
    )


def _count_genes(path: Path) -> int:
    try:
        return len(load_tensors(path))
    except Exception as exc:
        raise ModelFilesError(
            f"cannot read {path} ({refusal(exc)}): add the species again, or download the model"
        ) from None


def list_species(model_dir: str | os.PathLike | None = None) -> list[dict]:
    """Every species of a model directory: the official ones, then those added.

    Each entry: species, kind ("official"/"added"), genes (rows in its .pt file), taxonomy_id,
    path, and problem (None, or why the loader would refuse it). Reads no tensor data."""
    files = ModelFiles.find(model_dir)
    out = []
    for species in _official(files):
        path = files.protein_embeddings / protein_embedding_file(species)
        out.append(
            {
                "species": species,
                "kind": "official",
                "taxonomy_id": None,
                "path": str(path),
                "genes": _count_genes(path) if path.exists() else None,
                "problem": None if path.exists() else f"missing {path.name}",
            }
        )
    for row in _listing(files.root).itertuples():
        paths = {}
        for column in ("path", "chrom_csv"):
            value = getattr(row, column)
            if pd.isna(value):
                paths[column] = None
            else:
                paths[column] = files.resolve(value)
        missing = [c for c, p in paths.items() if p is None or not p.exists()]
        if pd.isna(row.taxonomy_id):
            missing.append("taxonomy_id")
        pt = paths["path"]
        out.append(
            {
                "species": str(row.species),
                "kind": "added",
                "taxonomy_id": None if pd.isna(row.taxonomy_id) else int(row.taxonomy_id),
                "path": str(pt) if pt else None,
                "genes": _count_genes(pt) if pt is not None and pt.exists() else None,
                "problem": f"missing {', '.join(missing)}: run `uceindex species add` again"
                if missing
                else None,
            }
        )
    return out
