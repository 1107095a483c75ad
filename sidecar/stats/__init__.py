"""Drift statistics, free of I/O: numpy and scipy only.

No asyncio, aiohttp, pyarrow, structlog or file access here (an import contract in
pyproject.toml checks it), so each function can be tested and benchmarked on arrays alone.

- `numbers`: finite-or-None and rates, the conventions every result uses.
- `bins`: the bin rule `(e[i-1], e[i]]` shared by in-process PSI, the fleet bin counters
  and baseline building, and the quantile bin edges.
- `reference`: reference statistics of a column and a model's `Baseline`.
- `ks`, `psi`, `chi2`: the two-sample KS test, the population stability index and the
  chi-square test; `correction`: multiple-testing adjusted p-values.
- `kolmogorov`: the finite-n Kolmogorov and Smirnov distributions behind the KS p-value,
  numpy only (scipy.stats is never imported).
- `twosample`: the tests of category counts, where the baseline is a sample too (a
  chi-square test of homogeneity, and the exact per-category test the verdicts use).
- `alarm`: the policy that keeps a false-alarm rate per period over every check.
"""
