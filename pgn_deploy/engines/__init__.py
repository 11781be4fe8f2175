"""Builders of deployment artifacts from a grafted ``model.pgn.onnx``.

* :mod:`~pgn_deploy.engines.precision`: fp16/bf16 copies whose PGN subgraph stays float32.
* :mod:`~pgn_deploy.engines.tensorrt_build`: strongly typed TensorRT plans plus their sidecar.
* :mod:`~pgn_deploy.engines.lint`: TensorRT readiness and float16 range checks on the CPU.
* :mod:`~pgn_deploy.engines.triton`: Triton model repositories.
* :mod:`~pgn_deploy.engines.serve`: a PyTriton server on one host (``pgn-serve``) and its client.

Every module imports its optional dependency (tensorrt, cuda-python, tritonclient) lazily.
"""
