"""Inference backends behind one interface, side by side (as in the C++ library).

* :mod:`~pgn_deploy.runtime.backends.base`: :class:`Backend`, its options and the registry;
* :mod:`~pgn_deploy.runtime.backends.ort`: ONNX Runtime (``ort-cpu``, ``ort-cuda``, ``ort-trt``);
* :mod:`~pgn_deploy.runtime.backends.trt`: TensorRT plans (``trt``), with
  :mod:`~pgn_deploy.runtime.backends.plan_sidecar` (the JSON beside a plan) and
  :mod:`~pgn_deploy.runtime.backends.cuda` (device buffers and streams through cuda-python).

A host that only runs plans needs none of :mod:`pgn_deploy.engines` (the builders).
Nothing is imported here: optional backends load only when asked for by name.
"""
