"""The official UCE model directory: which files it holds, where it is, what they are called.

The layout is the one the reference code reads (snap-stanford/UCE, `model_files/`), so a
directory unpacked from the official Figshare release (article 24320806) works as it is.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

from uceindex.errors import ModelFilesError

FIGSHARE_URL = "https://figshare.com/ndownloader/files/{id}"

# Checkpoint file name -> Figshare file id. One checkpoint per model directory.
CHECKPOINTS = {
    "4layer": ("4layer_model.torch", 42706576),
    "33layer": ("33l_8ep_1024t_1280.torch", 43423236),
}
# Files every model directory shares, name -> Figshare file id.
SHARED_FILES = {
    "all_tokens.torch": 42706585,
    "species_chrom.csv": 42706558,
    "species_offsets.pkl": 42706555,
    "protein_embeddings.tar.gz": 42715213,
}
PROTEIN_EMBEDDINGS_DIR = "protein_embeddings"
NEW_SPECIES_CSV = "new_species_protein_embeddings.csv"
SETTINGS_FILE = "uceindex.json"  # optional: {"nhead": 20}
MANIFEST_FILE = "uceindex-manifest.json"  # sizes and sha256 recorded at first download

# Species -> stem of its protein-embedding file in protein_embeddings/.
TRAINING_SPECIES = {
    "human": "Homo_sapiens.GRCh38",
    "mouse": "Mus_musculus.GRCm39",
    "frog": "Xenopus_tropicalis.Xenopus_tropicalis_v9.1",
    "zebrafish": "Danio_rerio.GRCz11",
    "mouse_lemur": "Microcebus_murinus.Mmur_3.0",
    "pig": "Sus_scrofa.Sscrofa11.1",
    "macaca_fascicularis": "Macaca_fascicularis.Macaca_fascicularis_6.0",
    "macaca_mulatta": "Macaca_mulatta.Mmul_10",
}
PROTEIN_EMBEDDING_SUFFIX = ".gene_symbol_to_embedding_ESM2.pt"

DEFAULT_MODEL = "4layer"


def protein_embedding_file(species: str) -> str:
    return TRAINING_SPECIES[species] + PROTEIN_EMBEDDING_SUFFIX


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "uceindex"


def resolve_model_dir(model_dir: str | os.PathLike | None = None) -> Path:
    """`--model-dir`, else `$UCEINDEX_MODEL_DIR`, else the user cache's 4-layer model."""
    if model_dir is not None:
        return Path(model_dir).expanduser()
    env = os.environ.get("UCEINDEX_MODEL_DIR")
    if env:
        return Path(env).expanduser()
    return cache_dir() / DEFAULT_MODEL


@dataclass(frozen=True)
class ModelFiles:
    """Paths of one model directory, checked to exist."""

    root: Path
    checkpoint: Path
    tokens: Path
    species_chrom: Path
    offsets: Path
    protein_embeddings: Path

    @classmethod
    def find(cls, model_dir: str | os.PathLike | None = None) -> ModelFiles:
        root = resolve_model_dir(model_dir)
        if not root.is_dir():
            raise ModelFilesError(
                f"no model directory at {root}: run `uceindex models download 4layer --dir {root}` "
                "or pass --model-dir / set UCEINDEX_MODEL_DIR"
            )
        found = [root / name for name, _ in CHECKPOINTS.values() if (root / name).is_file()]
        if not found:
            names = " or ".join(name for name, _ in CHECKPOINTS.values())
            raise ModelFilesError(
                f"{root} holds no checkpoint ({names}): run `uceindex models download 4layer --dir {root}`"
            )
        if len(found) > 1:
            raise ModelFilesError(
                f"{root} holds two checkpoints ({', '.join(p.name for p in found)}); "
                "keep one model per directory, their embeddings live in different spaces"
            )
        files = cls(
            root=root,
            checkpoint=found[0],
            tokens=root / "all_tokens.torch",
            species_chrom=root / "species_chrom.csv",
            offsets=root / "species_offsets.pkl",
            protein_embeddings=root / PROTEIN_EMBEDDINGS_DIR,
        )
        for path in (files.tokens, files.species_chrom, files.offsets, files.protein_embeddings):
            if not path.exists():
                raise ModelFilesError(
                    f"model file {path.name} is missing from {root}: "
                    f"run `uceindex models download {files.model_name} --dir {root}`"
                )
        return files

    def resolve(self, path: str | os.PathLike) -> Path:
        """A path as new_species_protein_embeddings.csv writes it: absolute, or relative to
        the model directory."""
        p = Path(str(path)).expanduser()
        return p if p.is_absolute() else self.root / p

    @property
    def model_name(self) -> str:
        return next(k for k, (name, _) in CHECKPOINTS.items() if name == self.checkpoint.name)


class _OffsetsUnpickler(pickle.Unpickler):
    """`species_offsets.pkl` is a dict of str -> int, which pickle writes with opcodes alone;
    any class or function it names (what a crafted pickle uses to run code) is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it names {module}.{name}")


def read_offsets(path: str | os.PathLike) -> dict[str, int]:
    """The species -> first token row table, read without running anything the file holds."""
    try:
        with open(path, "rb") as f:
            offsets = _OffsetsUnpickler(f).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ModelFilesError(
            f"{Path(path).name} is not a plain species -> row table ({exc}): download it again"
        ) from None
    ok = isinstance(offsets, dict) and all(
        isinstance(k, str) and type(v) is int for k, v in offsets.items()
    )
    if not ok:
        raise ModelFilesError(
            f"{Path(path).name} must map species names to row numbers: download it again"
        )
    return offsets
