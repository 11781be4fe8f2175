"""The PyTorch side of pgn-deploy (extra ``export``): checkpoint -> plain ONNX -> graft.

* :mod:`~pgn_deploy.export.load`: safe checkpoint loading (``torch.load(weights_only=True)``;
  arbitrary pickles only with ``trust_pickle``);
* :mod:`~pgn_deploy.export.onnx_export`: the plain ``torch.onnx`` export (``export_onnx``);
* :mod:`~pgn_deploy.export.api`: ``export_model``, load -> export -> :func:`pgn_deploy.graft.attach.graft`.

The graft itself lives in :mod:`pgn_deploy.graft` and needs no PyTorch. Nothing is imported here.
"""
