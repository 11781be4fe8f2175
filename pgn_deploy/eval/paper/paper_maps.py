"""``pgn-eval --paper-maps``: re-graft a model with the twenty maps of the published code.

The published code outputs, per image, the PGN maps of the last layer and of the penultimate
layer (``docs/penultimate.md``) for the labels ``oh`` and ``uni`` and p in
{0.1, 0.3, 0.5, 1, 2}: twenty maps. :func:`regraft_paper_maps` takes a grafted model, removes
what its graft added (:func:`pgn_deploy.benchmark.prune.plain_model`) and grafts those twenty
maps plus ``msp``/``entropy`` onto the same head, keeping the model's form, input description
and class names. With the source checkpoint, the penultimate maps differentiate the trained
kernel (the exporter's folded BatchNorm factors); without it, the kernel as it is in the graph
(the metadata's ``penultimate.weights`` says which).
"""
from __future__ import annotations

import os
from pathlib import Path

from pgn_deploy.benchmark.prune import plain_model
from pgn_deploy.contract import LAYERS, PGNSpec, load_onnx, read_metadata, save_onnx

PAPER_P = (0.1, 0.3, 0.5, 1.0, 2.0)
PAPER_LABELS = ("uni", "oh")


def paper_spec(form: str = "paper", upsample: str = "auto", pred: bool = False) -> PGNSpec:
    """The twenty maps (both layers x ``uni``/``oh`` x :data:`PAPER_P`) and the baselines."""
    return PGNSpec(p=PAPER_P, labels=PAPER_LABELS, form=form, layers=LAYERS, baselines=True, pred=pred,
                   upsample=upsample)


def regraft_paper_maps(model: str | os.PathLike[str], target: str | os.PathLike[str],
                       checkpoint: str | os.PathLike[str] | None = None) -> Path:
    """Write ``model`` (a grafted ``.pgn.onnx``) re-grafted with :func:`paper_spec` to ``target``
    (replaced); ``checkpoint``: its source checkpoint, for the trained-kernel BN factors.
    Raises a :class:`~pgn_deploy.contract.PGNError` when the head has no penultimate conv the
    graft can differentiate (the message names the reason)."""
    from pgn_deploy.graft.attach import graft

    grafted = load_onnx(model)
    meta = read_metadata(grafted)
    folds = []
    if checkpoint is not None:
        from pgn_deploy.export.bn_fold import batch_norm_folds
        from pgn_deploy.export.load import load_model

        loaded = load_model(checkpoint)
        folds = batch_norm_folds(loaded.module) if loaded.module is not None else []
    spec = paper_spec(meta.spec.form, meta.spec.upsample, meta.pred is not None)
    regrafted = graft(plain_model(grafted), spec, head=meta.head.conv_nodes[0], input_info=meta.input,
                      class_names=meta.class_names, bn_folds=folds, weights="trained" if folds else "graph")
    return save_onnx(regrafted, target, force=True)
