"""New species for UCE: gene tokens from an Ensembl proteome with ESM-2 (docs/uce.md §7).

- `fasta.py`: an Ensembl pep.all FASTA -> proteins, genes and gene positions.
- `esm.py`: protein and gene embeddings with fair-esm from local weights (resumable);
  `esm_numerics.py` its precisions and batch size, without torch.
- `register.py`: write a species' files beside the official ones and list a model's species.

Names are imported on first use, so importing this package does not load torch.
"""

from importlib import import_module

_EXPORTS = {
    "add_species": "uceindex.species.register",
    "list_species": "uceindex.species.register",
    "AddReport": "uceindex.species.register",
    "read_proteome": "uceindex.species.fasta",
    "Proteome": "uceindex.species.fasta",
    "ProteomeSummary": "uceindex.species.fasta",
    "load_esm": "uceindex.species.esm",
    "embed_proteins": "uceindex.species.esm",
    "gene_embeddings": "uceindex.species.esm",
    "ProteinCache": "uceindex.species.esm",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'uceindex.species' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
