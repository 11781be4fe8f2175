"""Evaluation of grafted models, in three parts (each imported on its own, nothing here):

* :mod:`pgn_deploy.eval.metrics`: the metric definitions (pixel, component, calibration,
  MetaSeg), streamed exactly over any number of frames, and their plots;
* :mod:`pgn_deploy.eval.paper`: the pipeline behind ``pgn-eval`` (data sets, inference cache,
  baselines, the paper's tables);
* :mod:`pgn_deploy.eval.checks`: parity of a grafted model (``pgn-check``) and comparisons of builds.

``import pgn_deploy.eval`` stays cheap: it pulls in neither scikit-learn nor matplotlib.
"""
