"""Comparing architectures the way the paper does: Table 1 (every model, same recipe and seeds, one split,
test set plus a transfer set) and Table 2 (k-fold cross-validation by patient).

Import from the submodules (:mod:`.table1`, :mod:`.cross_validation`, :mod:`.stats`); nothing is imported
here so that the command line stays fast.
"""
