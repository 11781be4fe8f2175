"""Evaluation: dataset readers, metrics (``pgn_deploy.eval.metrics``), baselines, tables, plots.

Nothing is imported here: each submodule is imported on its own, so ``import pgn_deploy.eval``
stays cheap and pulls in neither scikit-learn nor matplotlib.
"""
