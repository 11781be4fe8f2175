"""``pgn-export CKPT``: one ONNX model that returns the segmentation and the PGN maps."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from pgn_deploy.cli.common import EXIT_FAILED, emit, make_parser, run_cli
from pgn_deploy.contract import FORMS, INPUT_FORMATS, LABELS, LAYERS, RESOLUTIONS, UPSAMPLES, WEIGHTS, make_spec
from pgn_deploy.engines.precision import ALL_PRECISIONS
from pgn_deploy.engines.quantize import KEEP_FLOAT_MODES
from pgn_deploy.export.api import DEFAULT_EXPORTER
from pgn_deploy.export.onnx_export import EXPORTERS
from pgn_deploy.runtime.stats import THRESHOLD_RULE


def add_model_arguments(parser: argparse.ArgumentParser, checkpoint_flag: str | None = None) -> None:
    """The flags that say how to load a checkpoint (shared with ``pgn-check --reference``)."""
    if checkpoint_flag is None:
        parser.add_argument("checkpoint", help="SDK checkpoint, state_dict, TorchScript archive or ONNX file")
    else:
        parser.add_argument(checkpoint_flag, dest="checkpoint", metavar="CKPT", default=None,
                            help="the original checkpoint (any kind pgn-export reads)")
    parser.add_argument("--arch", help="network builder 'package.module:callable' (needed for a plain state_dict)")
    parser.add_argument("--arch-kwargs", metavar="JSON", help="keyword arguments of --arch as a JSON object")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a fully pickled nn.Module (loading it runs code from the file)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pgn-export``."""
    parser = make_parser(
        "pgn-export",
        "Export a segmentation checkpoint to ONNX with PGN uncertainty maps grafted in as extra outputs.",
    )
    add_model_arguments(parser)
    parser.add_argument("--p", type=float, action="append", metavar="P",
                        help="exponent of the p-norm, > 0; repeat for several maps (default 0.5)")
    parser.add_argument("--label", action="append", choices=(*LABELS, "both"),
                        help="auxiliary label: uni, oh, gt (form exact), both = uni + oh; repeatable (default uni)")
    parser.add_argument("--layer", action="append", choices=(*LAYERS, "both"),
                        help="the weights the gradient is taken for: last (the classifier), penultimate (the "
                             "conv before it; maps pgn_<label>_p<p>_penultimate), both; repeatable (default last)")
    parser.add_argument("--form", choices=FORMS, default="paper",
                        help="class factor: the published one (paper) or the true gradient (exact)")
    parser.add_argument("--bias", action="store_true", help="include the classifier bias in the gradient")
    parser.add_argument("--resolution", choices=RESOLUTIONS, default="feature",
                        help="feature: gradient at the classifier's resolution, map resized like the logits; "
                             "output: gradient per output pixel")
    parser.add_argument("--keep-feature-size", action="store_true", help="do not resize the maps to the logits' size")
    parser.add_argument("--upsample", choices=UPSAMPLES, default="auto",
                        help="how the maps are resized to the logits' size: matmul (bilinear interpolation "
                             "matrices, when the model resizes with one linear Resize; fastest on ONNX Runtime CPU "
                             "for small classifier maps), resize (a copy of the model's own resize ops) or auto "
                             "(matmul when the classifier map has at most 64 rows at the nominal input size)")
    parser.add_argument("--pred", action="store_true", help="add the argmax class map output 'pred'")
    parser.add_argument("--baselines", action="store_true", help="add the baseline maps 'msp' and 'entropy'")
    parser.add_argument("--head", metavar="NODE", help="a node of the classifier head (default: found automatically)")
    parser.add_argument("--input-shape", metavar="NxCxHxW", help="shape traced at export (batch and size stay dynamic)")
    parser.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    parser.add_argument("--exporter", choices=EXPORTERS, help=f"PyTorch ONNX exporter (default {DEFAULT_EXPORTER})")
    parser.add_argument("-o", "--output", metavar="OUT.onnx", help="output file (default <stem>.pgn.onnx beside CKPT)")
    parser.add_argument("--precision", choices=ALL_PRECISIONS, default="fp32",
                        help="precision of the network; the PGN subgraph and the outputs stay float32 "
                             "(int8/fp8: Q/DQ quantization, needs --calib). CKPT may also be a grafted "
                             ".pgn.onnx file: it is then converted as it is")
    parser.add_argument("--calib-max", type=int, metavar="N", help="int8/fp8: quantize with at most N --calib images")
    parser.add_argument("--calib-method", choices=("max", "entropy"), default="max",
                        help="int8/fp8: activation range calibration (default max: entropy clips the activation "
                             "tails, where out-of-distribution pixels lie)")
    parser.add_argument("--int8-keep-float", choices=KEEP_FLOAT_MODES, default="measured",
                        help="int8/fp8: what of the network stays float32 besides the PGN subgraph: 'measured' "
                             "(default) the smallest set of nodes, found by measuring on the --calib images, that "
                             "keeps the PGN maps within 1%% median relative error; 'classifier' the classifier "
                             "conv; 'none' nothing")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.add_argument("--weights", choices=WEIGHTS, default="trained",
                        help="gradient w.r.t. the checkpoint's trained classifier weights (an exporter's fold of a "
                             "BatchNorm or scale undone; default) or the weights stored in the graph")
    parser.add_argument("--static-shape", action="store_true",
                        help="export a fixed N x C x H x W (--input-shape) for models whose dynamic export fails")
    parser.add_argument("--explain", action="store_true",
                        help="print the classifier head that was found (ops from the features to the logits, kernel, "
                             "affine factors, layout ops) or the op that stopped the search; write nothing")
    deploy = parser.add_argument_group("deployment")
    deploy.add_argument("--calib", nargs="+", metavar="IMAGES",
                        help="in-distribution images, folders or videos: store each map's quantiles and default "
                             f"threshold ({THRESHOLD_RULE} of the in-distribution pixels) in the model; with "
                             "--precision int8/fp8 also the quantization's calibration images")
    deploy.add_argument("--normalize", action="store_true",
                        help="add <map>_norm outputs (in-distribution percentile rank, 0..1) and a uint8 ood_mask "
                             "output whose threshold is the optional input ood_threshold (needs --calib)")
    deploy.add_argument("--input-format", choices=INPUT_FORMATS, default="float-nchw",
                        help="what the graph input takes: the preprocessed float N x 3 x H x W tensor (default) or "
                             "uint8 N x H x W x 3 camera frames (RGB or BGR) normalised inside the graph")
    deploy.add_argument("--mean", type=float, nargs=3, metavar="M", help="input mean per channel (with --std)")
    deploy.add_argument("--std", type=float, nargs=3, metavar="S", help="input std per channel (with --mean)")
    deploy.add_argument("--outputs", nargs="+", metavar="NAME",
                        help="keep only these outputs (e.g. pred and the maps, without the logits)")
    return parser


def _explain(args: argparse.Namespace) -> int:
    from pgn_deploy.export.api import explain_head

    report = explain_head(args.checkpoint, head=args.head, input_shape=args.input_shape, opset=args.opset,
                          exporter=args.exporter, arch=args.arch, arch_kwargs=args.arch_kwargs,
                          trust_pickle=args.trust_pickle, static_shape=args.static_shape)
    emit(args, report)
    return 0 if report.refusal is None else EXIT_FAILED


def _export(args: argparse.Namespace) -> int:
    from pgn_deploy.export.api import export_model

    if args.explain:
        return _explain(args)
    spec = make_spec(p=args.p or [0.5], labels=args.label or ["uni"], form=args.form, bias=args.bias,
                     resolution=args.resolution, keep_feature_size=args.keep_feature_size, pred=args.pred,
                     baselines=args.baselines, upsample=args.upsample, layers=args.layer or ["last"])
    result = export_model(
        args.checkpoint,
        args.output,
        spec,
        head=args.head,
        input_shape=args.input_shape,
        opset=args.opset,
        exporter=args.exporter,
        arch=args.arch,
        arch_kwargs=args.arch_kwargs,
        trust_pickle=args.trust_pickle,
        precision=args.precision,
        calib=args.calib,
        calib_max=args.calib_max,
        calib_method=args.calib_method,
        int8_keep_float=args.int8_keep_float,
        force=args.force,
        normalize=args.normalize,
        input_format=args.input_format,
        outputs=args.outputs,
        mean=args.mean,
        std=args.std,
        weights=args.weights,
        static_shape=args.static_shape,
    )
    emit(args, result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``pgn-export``: parse ``argv`` (default ``sys.argv[1:]``), run, return the exit status."""
    return run_cli(build_parser(), _export, argv)


if __name__ == "__main__":
    raise SystemExit(main())
