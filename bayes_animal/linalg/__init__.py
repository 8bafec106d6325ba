"""Sparse and dense linear algebra of the mixed-model equations (numerics, no PyMC)."""

#: A given matrix with at most this fraction of non-zero entries is tried on the sparse route of
#: :mod:`bayes_animal.linalg.inverse` (and can make the sparse engine the cheaper one,
#: :mod:`bayes_animal.choice`); a denser one (a genomic G) has a dense factor. Here, not in
#: ``inverse``, so that the chooser reads it without importing numba.
MAX_SPARSE_DENSITY = 0.5
