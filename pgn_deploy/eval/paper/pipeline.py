"""``evaluate``: a grafted model on one benchmark dataset as it lies on disk -> the paper's tables.

The API of ``pgn-eval``. Order of work:

1. every argument is checked before anything is written: the dataset is opened
   (:func:`~pgn_deploy.eval.paper.datasets.open_dataset`), the model loaded, the requested maps
   resolved, the report and ``--smiyc-out`` targets checked, the cache's fingerprints compared;
2. pass 1 streams the frames (one in memory at a time, tqdm progress on stderr): maps from
   the cache or from inference (:func:`~pgn_deploy.eval.paper.inference.frame_maps`), each computed
   group cached at once, so an interrupted run resumes where it stopped; the metrics of the
   split accumulate;
3. OoD datasets: pass 2 reads the cached maps again for the component metrics at each map's
   t* (and writes the SMIYC files); Cityscapes: the in-distribution metrics are finished;
4. the report (Markdown, JSON, plots) is written atomically into ``--out``.

The cache, under ``--out`` (a temporary folder without it):

* ``maps/<kind>/<map>/<frame id>.npy``: float32 H x W per map (``pred``: int32 class ids);
  ``maps/<kind>/fingerprints.json`` records what made each map (model digest, TTA, baseline
  settings); a map made otherwise is refused, or with ``force`` recomputed;
* ``labels/<kind>/<frame id>.png``: the decoded OoD labels (0, 1, 255), so that ``pgn-metrics
  --scores maps/<kind>/<map> --labels labels/<kind>`` recomputes any row of the table;
* ``baselines/``: the exported MC dropout and ensemble member models (named by checkpoint digest).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from pgn_deploy.contract import BadInputError, InputInfo, PGNError, file_sha256, unique
from pgn_deploy.eval.metrics.metaseg import DEFAULT_FOLDS, DEFAULT_SEED
from pgn_deploy.eval.metrics.pixel import BINNINGS
from pgn_deploy.eval.paper import baselines
from pgn_deploy.eval.paper.datasets import Dataset, Frame, open_dataset
from pgn_deploy.eval.paper.indist_tables import InDistSplit, indist_report
from pgn_deploy.eval.paper.inference import FINGERPRINTS, PRED, TTA, MapCache, Scorer, frame_maps, image_digest
from pgn_deploy.eval.paper.ood_tables import OODSplit, ood_report
from pgn_deploy.eval.paper.report import EvalReport, MethodInfo, ReportPaths, write_report
from pgn_deploy.eval.paper.smiyc_export import SmiycWriter
from pgn_deploy.eval.paper.variants import VariantScorer, parse_variant, variant_maps
from pgn_deploy.runtime import Runtime


@dataclasses.dataclass
class EvalConfig:
    """What ``pgn-eval`` was asked to do.

    ``model``: grafted ``.pgn.onnx`` (or TensorRT plan); ``dataset``: ``KIND:DIR``;
    ``scores``: graph maps to evaluate (``None``: every PGN map and baseline output the model
    has); ``checkpoint``: the model's source checkpoint (needed for MC dropout);
    ``mc_dropout``: MC dropout samples (``None``: off); ``mc_rate``: override of every dropout
    probability (``None``: the network's own); ``mc_batch``: copies of the image per MC call;
    ``ensemble``: member checkpoints; ``tta``: test-time augmentation of the grafted model;
    ``out``: report and cache folder (``None``: temporary cache, no files); ``smiyc_out``:
    SMIYC submission root; ``binning``: pixel-metric counting (``exact`` or ``smiyc``);
    ``folds`` / ``seed``: cross validation of the Cityscapes meta models; ``force``: replace
    existing reports / SMIYC files / stale cached maps; ``command``: the command line recorded
    in the report; ``paper_maps``: evaluate the model re-grafted with the published code's
    twenty maps and the baselines (:mod:`~pgn_deploy.eval.paper.paper_maps`; with
    ``checkpoint``, the penultimate maps use its trained kernel), kept as
    ``<out>/models/paper_maps.pgn.onnx``. ``variants``: ``TAG=MODEL`` texts, other files of the
    same model (an INT8 copy) whose PGN maps are evaluated as rows ``<map>@TAG``
    (:mod:`~pgn_deploy.eval.paper.variants`).
    """

    model: str | os.PathLike[str]
    dataset: str
    scores: Sequence[str] | None = None
    checkpoint: str | os.PathLike[str] | None = None
    mc_dropout: int | None = None
    mc_rate: float | None = None
    mc_batch: int = 4
    ensemble: Sequence[str | os.PathLike[str]] = ()
    tta: TTA = TTA()
    out: str | os.PathLike[str] | None = None
    smiyc_out: str | os.PathLike[str] | None = None
    binning: str = "exact"
    folds: int = DEFAULT_FOLDS
    seed: int = DEFAULT_SEED
    force: bool = False
    backend: str = "auto"
    threads: int = 0
    progress: bool = True
    command: str = ""
    paper_maps: bool = False
    variants: Sequence[str] = ()

    def check(self) -> None:
        """Argument checks that need no file."""
        if self.binning not in BINNINGS:
            raise BadInputError(f"unknown binning {self.binning!r}; choose from {', '.join(BINNINGS)}")
        if self.mc_dropout is not None:
            if self.mc_dropout < 1:
                raise BadInputError(f"--mc-dropout needs at least 1 sample, got {self.mc_dropout}")
            if self.checkpoint is None:
                raise BadInputError("--mc-dropout needs --checkpoint: the source checkpoint of the model "
                                    "(dropout is sampled in a variant exported from it)")
        if self.mc_batch < 1:
            raise BadInputError(f"--mc-batch must be at least 1, got {self.mc_batch}")
        if self.folds < 2:
            raise BadInputError(f"--folds must be at least 2, got {self.folds}")
        if self.mc_rate is not None and not 0.0 <= self.mc_rate < 1.0:
            raise BadInputError(f"the MC dropout rate must be in [0, 1), got {self.mc_rate}")
        tags = [parse_variant(text)[0] for text in self.variants]
        if len(set(tags)) < len(tags):
            raise BadInputError(f"--variant: a tag is given twice ({', '.join(tags)})")
        for path in [*([self.checkpoint] if self.checkpoint else []), *self.ensemble]:
            if not Path(path).is_file():
                raise BadInputError(f"{path}: no such checkpoint file")


# --------------------------------------------------------------------------- methods
def resolve_maps(runtime: Runtime, scores: Sequence[str] | None) -> list[str]:
    """The graph maps to evaluate: ``scores`` (checked against the model) or all of them."""
    available = runtime.score_names
    if scores is None:
        return list(available)
    wanted = unique(s.strip() for s in scores if s.strip())
    if not wanted:
        raise BadInputError("--scores is empty")
    baseline_maps = (*baselines.MC_MAPS, *baselines.ENSEMBLE_MAPS)
    missing = [s for s in wanted if s not in available and s not in baseline_maps]
    if missing:
        raise BadInputError(f"{runtime.model_path} has no map {', '.join(missing)}; it has: "
                            f"{', '.join(available)}")
    return [s for s in wanted if s in available]


def _exported(folder: Path, name: str, export: Any) -> Path:
    """``folder/name``, exported by ``export(path)`` unless a previous run left it there. The
    export is written outside ``folder`` and moved in only when it succeeded."""
    path = folder / name
    if not path.is_file():
        with tempfile.TemporaryDirectory(prefix="pgn-eval-export-") as tmp:
            export(Path(tmp) / name)
            folder.mkdir(parents=True, exist_ok=True)
            shutil.move(str(Path(tmp) / name), path)
    return path


def baseline_fingerprints(config: EvalConfig) -> dict[str, dict[str, Any]]:
    """The maps of the requested MC dropout / ensemble baselines, each with its fingerprint
    (checkpoint digests and settings)."""
    prints: dict[str, dict[str, Any]] = {}
    if config.mc_dropout is not None:
        rate = "own" if config.mc_rate is None else format(config.mc_rate, "g")
        prints |= dict.fromkeys(baselines.MC_MAPS, {"checkpoint": file_sha256(config.checkpoint),
                                            "samples": config.mc_dropout, "rate": rate})
    if config.ensemble:
        prints |= dict.fromkeys(baselines.ENSEMBLE_MAPS, {"members": [file_sha256(path) for path in config.ensemble]})
    for tag, path in map(parse_variant, config.variants):
        prints |= dict.fromkeys(variant_maps(path, tag), {"variant": file_sha256(path)})
    return prints


def baseline_scorers(config: EvalConfig, info: InputInfo, folder: Path,
                     prints: dict[str, dict[str, Any]]) -> list[Scorer]:
    """MC dropout and ensemble scorers of ``config``; their models are exported into ``folder``
    unless a previous run left them there (named by checkpoint digest)."""
    scorers: list[Scorer] = []
    if config.mc_dropout is not None:
        mc = prints[baselines.MC_MAPS[0]]
        path = _exported(folder, f"mc_dropout_{mc['checkpoint'][:16]}_rate-{mc['rate']}.onnx",
                         lambda p: baselines.export_mc_dropout(config.checkpoint, p, info, config.mc_rate))
        scorers.append(baselines.MCDropoutScorer(path, info, config.mc_dropout, config.mc_batch))
    if config.ensemble:
        digests = prints[baselines.ENSEMBLE_MAPS[0]]["members"]
        paths = [_exported(folder, f"member_{d[:16]}.onnx", lambda p, c=c: baselines.export_member(c, p, info))
                 for c, d in zip(config.ensemble, digests, strict=True)]
        scorers.append(baselines.EnsembleScorer(paths, info))
    for tag, path in map(parse_variant, config.variants):
        scorers.append(VariantScorer(tag, path, config.backend, config.threads))
    return scorers


def method_infos(maps: Sequence[str], config: EvalConfig) -> dict[str, MethodInfo]:
    """Display name and inference cost of every evaluated map."""
    views = len(config.tta.views)
    per_pass = f" ({views} TTA views: {views} forward passes)" if views > 1 else ""
    infos = {}
    for name in maps:
        if "@" in name:
            tag = name.rsplit("@", 1)[1]
            infos[name] = MethodInfo(name, f"variant {tag}", f"one forward pass of the {tag} file (another model)")
        elif name.startswith("pgn_"):
            infos[name] = MethodInfo(name, "model", baselines.COSTS["pgn"] + per_pass)
        elif name in ("msp", "entropy"):
            infos[name] = MethodInfo(name, "model", baselines.COSTS[name] + per_pass)
        elif name in baselines.MC_MAPS:
            infos[name] = MethodInfo(name, "mc_dropout", baselines.cost("mc_dropout", config.mc_dropout))
        elif name in baselines.ENSEMBLE_MAPS:
            infos[name] = MethodInfo(name, "ensemble", baselines.cost("ensemble", len(config.ensemble)))

        else:
            infos[name] = MethodInfo(name, "model", "output of the one forward pass" + per_pass)
    return infos


# --------------------------------------------------------------------------- running
def _evaluate_paper_maps(config: EvalConfig) -> EvalReport:
    """:func:`evaluate` of the model re-grafted with the twenty maps (``config.paper_maps``)."""
    from pgn_deploy.eval.paper.paper_maps import regraft_paper_maps

    open_dataset(config.dataset)  # a bad dataset fails before the re-graft
    with _work_folder(Path(config.out) if config.out is not None else None) as work:
        path = work / "models" / "paper_maps.pgn.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        regraft_paper_maps(config.model, path, config.checkpoint)
        return evaluate(dataclasses.replace(config, model=path, paper_maps=False))


@contextlib.contextmanager
def _work_folder(out: Path | None) -> Iterator[Path]:
    """``out`` itself, or a temporary folder removed at the end.

    A :class:`PGNError` (a corrupt image or label, a bad argument found late) leaves ``out`` as
    it was: what this run added is removed and the files it rewrote (the fingerprint indexes)
    get their old bytes back. An interrupted run (Ctrl-C) keeps its maps, to resume.
    """
    if out is None:
        with tempfile.TemporaryDirectory(prefix="pgn-eval-") as tmp:
            yield Path(tmp)
        return
    existed = out.exists()
    before = set(out.rglob("*")) if existed else set()
    indexes = {path: path.read_bytes() for path in before if path.name == FINGERPRINTS and path.is_file()}
    try:
        yield out
    except PGNError:
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
            raise
        for path in sorted(set(out.rglob("*")) - before, key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        for path, data in indexes.items():
            path.write_bytes(data)
        raise


def _save_label(folder: Path, frame: Frame, labels: np.ndarray) -> None:
    """The decoded OoD label as ``folder/<id>.png`` (once; atomic)."""
    target = folder / f"{frame.id}.png"
    if target.is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{frame.id}.", suffix=".png", dir=folder)
    os.close(fd)
    try:
        if not cv2.imwrite(tmp, labels):
            raise BadInputError(f"cannot write {target}")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _bar(frames: Sequence[Frame], desc: str, enabled: bool) -> Any:
    return tqdm(frames, desc=desc, unit="frame", file=sys.stderr, disable=None if enabled else True)


def evaluate(config: EvalConfig) -> EvalReport:
    """Run the evaluation of ``config`` (module doc) and return its report (also written to
    ``config.out`` when given). Raises a :class:`~pgn_deploy.contract.PGNError` for bad input,
    before anything is written when it can be known up front."""
    config.check()
    if config.paper_maps:
        return _evaluate_paper_maps(config)
    dataset = open_dataset(config.dataset)
    if not dataset.is_ood and len(dataset) < config.folds:
        raise BadInputError(f"{dataset.root}: {len(dataset)} frame(s); the {config.folds}-fold cross validation "
                            "of the meta models needs at least as many (lower --folds)")
    runtime = Runtime(config.model, config.backend, intra_op_threads=config.threads)
    graph_maps = resolve_maps(runtime, config.scores)
    baseline_prints = baseline_fingerprints(config)
    maps = [*graph_maps, *baseline_prints]
    if config.scores is not None:
        _check_baseline_requests(config.scores, maps)
    out = Path(config.out) if config.out is not None else None
    if out is not None and out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out}: exists and is not a folder")
    if out is not None:
        ReportPaths(out, dataset.kind).check(config.force)
    smiyc = None
    if config.smiyc_out is not None:
        if not dataset.is_ood:
            raise BadInputError("--smiyc-out applies to the OoD datasets, not to cityscapes")
        smiyc = SmiycWriter(config.smiyc_out, dataset, maps, config.force)
        smiyc.check_targets()
    digest = file_sha256(config.model)
    model_print = {"model": digest, "tta": config.tta.to_json()}
    fingerprints = {name: model_print for name in [*graph_maps, PRED]} | baseline_prints
    with _work_folder(out) as work:
        cache = MapCache(work / "maps" / dataset.kind)
        cache.check(fingerprints, config.force)
        started = time.perf_counter()
        scorers = baseline_scorers(config, runtime.metadata.input, work / "baselines", baseline_prints)
        cache.claim(fingerprints, config.force)
        infos = method_infos(maps, config)
        if dataset.is_ood:
            results, seconds = _run_ood(dataset, runtime, graph_maps, maps, scorers, cache, work, config, smiyc)
            extra = {"smiyc": smiyc.to_json()} if smiyc is not None else {}
            header = _header(config, dataset, runtime, digest, time.perf_counter() - started)
            report = ood_report(header, infos, results, _timing(seconds), extra,
                                _ood_notes(config, dataset, out, smiyc))
        else:
            result, seconds = _run_indist(dataset, runtime, graph_maps, maps, scorers, cache, config)
            header = _header(config, dataset, runtime, digest, time.perf_counter() - started)
            report = indist_report(header, infos, result, _timing(seconds), _indist_notes(config),
                                   config.folds, config.seed)
        if out is None:  # nowhere to put plots
            return dataclasses.replace(report, plot_names=[], plot_job=None)
        write_report(report, out, config.force)
    return report


def _header(config: EvalConfig, dataset: Dataset, runtime: Runtime, digest: str, seconds: float) -> dict[str, Any]:
    """The report's header: what was evaluated, how, and how long it took."""
    views = config.tta.views
    tta = "off" if len(views) == 1 else (f"scales {', '.join(format(s, 'g') for s in config.tta.scales)}"
                                         f"{' with horizontal flip' if config.tta.flip else ''} ({len(views)} views; "
                                         "baselines run on the plain image)")
    return {
        "command": config.command or f"pgn_deploy.eval.paper.pipeline.evaluate({config!r})",
        "model": {"path": str(config.model), "sha256": digest, "backend": runtime.backend_name},
        "dataset": {"kind": dataset.kind, "root": str(dataset.root), "frames": len(dataset),
                    "unlabeled": dataset.unlabeled, "track": dataset.track},
        "tta": tta, "binning": config.binning, "seconds": seconds,
    }


def _timing(seconds: dict[str, list[float]]) -> dict[str, dict[str, float | int]]:
    """Per method: frames computed in this run and the mean compute seconds per frame."""
    return {method: {"frames": len(values), "mean_s": float(np.mean(values)), "total_s": float(np.sum(values))}
            for method, values in seconds.items()}


def _ood_notes(config: EvalConfig, dataset: Dataset, out: Path | None,
               smiyc: SmiycWriter | None) -> list[str]:
    """How the OoD numbers were made and how to recompute one from the saved maps."""
    notes = []
    if out is not None:
        track = dataset.track
        notes.append(f"Recompute a row from the saved maps: `pgn-metrics --scores {out}/maps/{dataset.kind}/<map> "
                     f"--labels {out}/labels/{dataset.kind} --track {track} --binning {config.binning}`.")
    if smiyc is not None:
        scales = ", ".join(f"{name} x 2^{e}" for name, e in smiyc.exponents.items())
        notes.append(f"SegmentMeIfYouCan files in `{smiyc.root}/anomaly_p/<map>/<dataset>/<frame>.hdf5` "
                     f"(float16, dataset 'value'), each map scaled by a power of two so its largest "
                     f"value fits float16 (order unchanged): {scales}.")
    return notes


def _indist_notes(config: EvalConfig) -> list[str]:
    notes = ["The softmax is needed per pixel (AuSE, MetaSeg) and is not cached: every Cityscapes run infers "
             "the model (the baselines' maps are cached)."]
    if config.tta.active:
        notes.append("With TTA the softmax, the maps and the prediction are the means over the views.")
    return notes


def _check_baseline_requests(scores: Sequence[str], maps: Sequence[str]) -> None:
    """A baseline map named in --scores needs its baseline switched on."""
    asked = [s for s in scores if s in (*baselines.MC_MAPS, *baselines.ENSEMBLE_MAPS) and s not in maps]
    if asked:
        flag = "--mc-dropout N" if asked[0] in baselines.MC_MAPS else "--ensemble CKPT..."
        raise BadInputError(f"--scores names {', '.join(asked)}, which needs {flag}")


def _run_ood(dataset: Dataset, runtime: Runtime, graph_maps: list[str], maps: list[str],
             scorers: list[Scorer], cache: MapCache, work: Path, config: EvalConfig,
             smiyc: SmiycWriter | None) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Both passes over an OoD split (``maps``: the graph maps, then the scorers' maps); returns
    the results per map and the compute seconds of each method (one entry per frame it was
    computed for)."""
    split = OODSplit(maps, dataset.track, config.binning)
    labels_dir = work / "labels" / dataset.kind
    seconds: dict[str, list[float]] = {}
    for frame in _bar(dataset.frames, f"{dataset.kind}: maps", config.progress):
        computed = frame_maps(runtime, frame, graph_maps, cache=cache, tta=config.tta, scorers=scorers)
        labels = frame.load_label()
        _save_label(labels_dir, frame, labels)
        split.add_pixels(frame.id, computed.maps, labels)
        if smiyc is not None:
            smiyc.observe(computed.maps)
        for method, value in computed.seconds.items():
            seconds.setdefault(method, []).append(value)
    split.finish_pixels()
    for frame in _bar(dataset.frames, f"{dataset.kind}: components", config.progress):
        loaded = cache.load(maps, frame.id, image_digest(frame))
        if loaded is None:
            raise BadInputError(f"{cache.root}: the cached maps of {frame.id} disappeared during the run")
        labels = frame.load_label()
        split.add_components(frame.id, loaded, labels)
        if smiyc is not None:
            smiyc.write(frame, loaded)
    return split.results(), seconds


def _run_indist(dataset: Dataset, runtime: Runtime, graph_maps: list[str], maps: list[str],
                scorers: list[Scorer], cache: MapCache, config: EvalConfig) -> tuple[Any, dict[str, list[float]]]:
    """One pass over Cityscapes: Table 1 and the segment table of Figure 3."""
    split = InDistSplit(maps, config.folds, config.seed)
    seconds: dict[str, list[float]] = {}
    for frame in _bar(dataset.frames, f"{dataset.kind}: maps", config.progress):
        computed = frame_maps(runtime, frame, graph_maps, cache=cache, tta=config.tta, scorers=scorers,
                              with_probs=True)
        split.add(frame.id, computed.maps, computed.pred, computed.probs, frame.load_label())
        for method, value in computed.seconds.items():
            seconds.setdefault(method, []).append(value)
    return split.result(), seconds
