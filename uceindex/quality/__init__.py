"""The atlas quality report: is the store's space fit for a neighbour vote?

    from uceindex.quality import qc, plot_qc

`metrics` is the pure maths (numpy in, numbers out); `report` reads a bounded sample of
the store and assembles `qc`'s dict; `figure` draws it. docs/qc.md has the formulas.
"""

from uceindex.quality.figure import plot_qc
from uceindex.quality.report import qc

__all__ = ["qc", "plot_qc"]
