"""Checks that a grafted model computes what it claims.

* :mod:`~pgn_deploy.eval.checks.parity`: ``pgn-check`` (graph invariants and PGN maps against
  the PyTorch reference);
* :mod:`~pgn_deploy.eval.checks.compare`: two builds of one model compared through Polygraphy
  (``pgn-check --against``).
"""
