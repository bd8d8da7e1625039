"""Search over the store: k-NN annotation, cross-species matching, similar-cell search.

`vote` and `match` are the pure maths (numpy in, numpy or pandas out, no I/O); the modules
that talk to the store sit on top of them.
"""
