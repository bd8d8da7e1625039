"""Search over the store: k-NN annotation, similar cells, cross-species matching, the index.

    from uceindex.search import annotate, summarise, similar, match, cell_map, refresh_index

`vote` and `matching` are the pure maths (numpy in, numpy or pandas out, no I/O);
`index` (the vector index) and `neighbours` (batched k-NN, `knn`) talk to the `cells`
table; the verbs sit on top: `annotation`, `similar_cells`, `cross_species`, with `query`
(query vectors), `novelty` (the threshold), `output` (files, obs) and `recall`.
Every verb takes a `Store` or a store URI. No torch here unless a query is embedded.
"""

from uceindex.search.annotation import annotate, summarise
from uceindex.search.cell_map import cell_map
from uceindex.search.cross_species import MatchResult, match
from uceindex.search.index import IndexReport, cells_table, prewarm_index, refresh_index
from uceindex.search.neighbours import Neighbours, cell_vector, knn
from uceindex.search.output import OUT_SUFFIXES, add_to_obs, write_output
from uceindex.search.recall import RecallReport, index_stats
from uceindex.search.similar_cells import similar

__all__ = [
    "annotate",
    "summarise",
    "similar",
    "match",
    "cell_map",
    "MatchResult",
    "write_output",
    "OUT_SUFFIXES",
    "add_to_obs",
    "refresh_index",
    "prewarm_index",
    "IndexReport",
    "index_stats",
    "RecallReport",
    "knn",
    "cell_vector",
    "cells_table",
    "Neighbours",
]
