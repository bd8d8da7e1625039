"""Reading single-cell data: where the raw counts are, and which genes the columns are."""
