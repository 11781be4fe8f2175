"""The pipeline behind ``pgn-eval``: the paper's tables for a grafted model on a data set.

* :mod:`~pgn_deploy.eval.paper.datasets`: readers of the benchmark layouts on disk;
* :mod:`~pgn_deploy.eval.paper.inference`: per-frame maps through the runtime, with a cache;
* :mod:`~pgn_deploy.eval.paper.baselines`: MC dropout and deep ensembles;
* :mod:`~pgn_deploy.eval.paper.ood_tables`, :mod:`~pgn_deploy.eval.paper.indist_tables`: Tables 1-3;
* :mod:`~pgn_deploy.eval.paper.published`: the paper's own numbers, printed beside ours;
* :mod:`~pgn_deploy.eval.paper.report`: Markdown/JSON report; :mod:`~pgn_deploy.eval.paper.smiyc_export`:
  maps in the SegmentMeIfYouCan submission layout;
* :mod:`~pgn_deploy.eval.paper.pipeline`: ``evaluate``, the API of ``pgn-eval``.
"""
