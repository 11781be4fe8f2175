"""The project's latency study: what PGN costs against the plain model, the eager PyTorch
reference, MC dropout and per-pixel back-propagation (``python -m benchmarks --help``).

Results go to ``benchmarks/results/latency_*`` (JSON, Markdown, PNG); ``NOTES.md`` records the
optimization attempts on the grafted subgraph.
"""
