"""An Ensembl `*.pep.all.fa` proteome -> proteins, genes and gene positions (docs/uce.md §7).

A header is the protein id then space-separated `key:value` fields, for example

    >ENSGALP00010000001.1 pep chromosome:bGalGal1.mat.broiler.GRCg7b:1:3455:7321:-1
     gene:ENSGALG00010000001.1 ... gene_symbol:NEK7 description:NIMA related kinase 7 [...]

(one line in the file). The key is what comes before the first `:`, so a value keeps its own
colons: zebrafish symbols such as `si:ch211-12e1.3` stay whole. `description:` runs to the end
of the line and is not parsed. The location is read from `chromosome:`, else
`primary_assembly:`, else `scaffold:` (the order of the official UCE notebook
"Create New Species Files"); its value is `ASSEMBLY:NAME:START:END:STRAND`.

Gene position rule: a gene's chromosome is the one of its first protein (file order) that has
a location; its start is the lowest START among its proteins on that chromosome, i.e. the
gene's own start (START < END on both strands in Ensembl). The UCE notebook keeps the last
protein's start instead; within a chromosome the two orders differ only where isoforms of
neighbouring genes overlap.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from uceindex.errors import InputDataError

LOCATION_KEYS = ("chromosome", "primary_assembly", "scaffold")  # first present wins
SYMBOL_KEY = "gene_symbol"
STOP = "*"  # proteins with a stop codon are not embedded (SATURN's clean_fasta drops them)


@dataclass(frozen=True)
class Protein:
    """One FASTA record that names a gene; `chromosome`/`start` are None without a location."""

    id: str
    symbol: str
    chromosome: str | None
    start: int | None
    sequence: str


@dataclass(frozen=True)
class ProteomeSummary:
    """Counts over the records of one FASTA file."""

    proteins: int  # records in the file
    no_symbol: int  # no gene_symbol field: skipped
    no_chromosome: int  # a symbol but no chromosome/primary_assembly/scaffold location
    stop_codon: int  # a '*' in the sequence: not embedded (its location still counts)
    duplicate_id: int  # a protein id seen before: skipped
    genes: int  # distinct symbols with a position
    chromosomes: int  # distinct chromosomes of those genes

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Proteome:
    """The usable records of a proteome, and the position of every gene that has one."""

    proteins: list[Protein]
    positions: pd.DataFrame  # gene_symbol (as written), chromosome, start; one row per gene
    summary: ProteomeSummary

    def gene_proteins(self) -> dict[str, list[str]]:
        """Gene symbol -> ids of its proteins to embed, symbols sorted as SATURN sorts them.

        Only genes with a position (UCE cannot place the others) and proteins without a stop
        codon; a gene's proteins without a location still count, as in SATURN."""
        placed = set(self.positions["gene_symbol"])
        genes: dict[str, list[str]] = {}
        for p in self.proteins:
            if p.symbol in placed and STOP not in p.sequence:
                genes.setdefault(p.symbol, []).append(p.id)
        return {s: genes[s] for s in sorted(genes)}

    def sequences(self) -> dict[str, str]:
        return {p.id: p.sequence for p in self.proteins}


def parse_header(header: str) -> tuple[str, dict[str, str]]:
    """`>ID key:value key:value ... description:free text` -> (ID, {key: value}).

    Tokens without a colon (`pep`) are ignored; the first occurrence of a key wins."""
    tokens = header.lstrip(">").split()
    if not tokens:
        return "", {}
    fields: dict[str, str] = {}
    for token in tokens[1:]:
        key, sep, value = token.partition(":")
        if not sep:
            continue
        if key == "description":
            break  # free text: may hold spaces and `key:value` look-alikes
        fields.setdefault(key, value)
    return tokens[0], fields


def parse_location(value: str) -> tuple[str, int] | None:
    """`ASSEMBLY:NAME:START:END:STRAND` -> (NAME, START), None when malformed."""
    parts = value.rsplit(":", 3)
    if len(parts) != 4:
        return None
    assembly_and_name, start = parts[0], parts[1]
    _, sep, name = assembly_and_name.rpartition(":")
    if not sep or not name or not start.isdigit():
        return None
    return name, int(start)


def _records(path: Path):
    """(header, sequence) pairs; sequences may span lines; .gz is read transparently."""
    opener = gzip.open if path.suffix == ".gz" else open
    header, chunks = None, []
    with opener(path, "rt") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith(">"):
                if header is not None:
                    yield header, "".join(chunks)
                header, chunks = line, []
            elif header is None:
                raise InputDataError(f"{path.name} is not a FASTA file: it does not start with '>'")
            else:
                chunks.append(line)
    if header is not None:
        yield header, "".join(chunks)


def read_proteome(path: str | os.PathLike) -> Proteome:
    """Parse an Ensembl pep.all FASTA (plain or .gz); see the module docstring for the rules."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputDataError(f"no proteome at {path}: pass an Ensembl *.pep.all.fa file")
    proteins: list[Protein] = []
    seen: set[str] = set()
    n = no_symbol = no_chrom = stop = duplicate = 0
    try:
        for header, sequence in _records(path):
            n += 1
            pid, fields = parse_header(header)
            if pid in seen:
                duplicate += 1
                continue
            seen.add(pid)
            symbol = fields.get(SYMBOL_KEY)
            if not symbol:
                no_symbol += 1
                continue
            location = next((parse_location(fields[k]) for k in LOCATION_KEYS if k in fields), None)
            if location is None:
                no_chrom += 1
            sequence = sequence.upper()
            stop += STOP in sequence
            chrom, start = location or (None, None)
            proteins.append(Protein(pid, symbol, chrom, start, sequence))
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise InputDataError(f"cannot read {path.name} as FASTA ({exc})") from None
    if n == 0:
        raise InputDataError(f"{path.name} holds no FASTA records")
    positions = _positions(proteins)
    summary = ProteomeSummary(
        proteins=n,
        no_symbol=no_symbol,
        no_chromosome=no_chrom,
        stop_codon=stop,
        duplicate_id=duplicate,
        genes=len(positions),
        chromosomes=positions["chromosome"].nunique(),
    )
    return Proteome(proteins=proteins, positions=positions, summary=summary)


def _positions(proteins: list[Protein]) -> pd.DataFrame:
    """One row per gene: chromosome of its first located protein, lowest start on it."""
    chrom: dict[str, str] = {}
    start: dict[str, int] = {}
    for p in proteins:
        if p.chromosome is None:
            continue
        if p.symbol not in chrom:
            chrom[p.symbol], start[p.symbol] = p.chromosome, p.start
        elif p.chromosome == chrom[p.symbol]:
            start[p.symbol] = min(start[p.symbol], p.start)
    return pd.DataFrame(
        {
            "gene_symbol": list(chrom),
            "chromosome": list(chrom.values()),
            "start": [start[s] for s in chrom],
        }
    )
