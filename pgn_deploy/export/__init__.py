"""Export side of pgn-deploy (needs the ``export`` extra: PyTorch, onnx-ir).

* :mod:`pgn_deploy.export.onnx_export` -- plain PyTorch -> ONNX export (``export_onnx``).
* :mod:`pgn_deploy.export.head` -- finds the 1x1-conv classifier head of an ONNX graph
  (``find_head``).
* :mod:`pgn_deploy.export.pgn_subgraph` -- builds the PGN subgraph on top of that head.
* :mod:`pgn_deploy.export.graft` -- ``graft(model, spec)``: the grafted model with the PGN
  outputs and the ``pgn_deploy`` metadata.

Nothing is imported here: ``import pgn_deploy.export`` stays cheap.
"""
