"""The graft: torch-free ONNX surgery that adds PGN outputs to a segmentation model.

Needs onnx and onnx-ir only (no PyTorch), so a third-party ONNX model is grafted on any host:

* :mod:`~pgn_deploy.graft.head`: finds the pixel-wise classifier head (``find_head``);
* :mod:`~pgn_deploy.graft.pgn_subgraph`: the float32 PGN subgraph on top of that head;
* :mod:`~pgn_deploy.graft.interpolation`: in-graph bilinear upsampling of the maps as MatMuls;
* :mod:`~pgn_deploy.graft.graph_builder`: appends uniquely named nodes to an ``onnx_ir`` graph;
* :mod:`~pgn_deploy.graft.attach`: ``graft(model, spec)``, the grafted model with its metadata.

and the deployment steps applied after it (:mod:`~pgn_deploy.graft.deploy`):

* :mod:`~pgn_deploy.graft.normalize`: ``<map>_norm`` percentile ranks and ``ood_mask`` from the
  calibration;
* :mod:`~pgn_deploy.graft.preprocess`: a uint8 N x H x W x 3 input, normalised in the graph;
* :mod:`~pgn_deploy.graft.deploy`: both, in order, and ``keep_outputs`` (``--outputs``).

Nothing is imported here; ``pgn_deploy.graft`` (the function) is on the package face.
"""
