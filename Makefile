# pgn-deploy developer entry points. Everything runs inside .venv in this folder.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install install-gpu venv-serve cpp lint test demo mine-demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

# PyTriton's wheel needs numpy < 2: the live-server test runs it from its own environment.
SERVE_STAMP := .venv-serve/.installed
$(SERVE_STAMP): pyproject.toml
	test -x .venv-serve/bin/python || $(PYTHON) -m venv .venv-serve
	.venv-serve/bin/python -m pip install --quiet -e '.[serve]'
	touch $(SERVE_STAMP)

venv-serve: $(SERVE_STAMP)

# onnxruntime-gpu and onnxruntime install the same module: never keep both.
install-gpu: $(STAMP)
	$(BIN)/python -m pip uninstall --yes onnxruntime onnxruntime-gpu
	$(BIN)/python -m pip install --quiet -e '.[gpu]'

# The C++ library and its Python bindings (pgn_deploy._native): fetches the ONNX Runtime
# headers into cpp_bindings/build/, builds, installs the module into the package.
cpp: $(STAMP)
	PYTHON=$(CURDIR)/$(BIN)/python cpp_bindings/scripts/build.sh

# Lints (ruff, configured in pyproject.toml), builds and tests the C++ library when its inputs
# can be had (else prints SKIP and why), then runs the whole pytest suite (C++ parity tests skip
# with the reason when unbuilt).
test: $(STAMP) $(SERVE_STAMP)
	$(BIN)/ruff check .
	PYTHON=$(CURDIR)/$(BIN)/python cpp_bindings/scripts/build.sh --if-available --test
	$(BIN)/python -m pytest -n 2 --dist loadscope $(PYTEST_ARGS)

# The project's latency study (about 25 minutes on 2 CPU cores); results in benchmarks/results/.
# BENCH_ARGS="--backend ort-cuda --torch-device cuda" measures a GPU.
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m benchmarks --threads 1 --clock cpu --out benchmarks/results --force $(BENCH_ARGS)

# The whole pipeline on the shipped demo model: export (uni and oh, p = 0.5, pred, baselines)
# calibrated on in-distribution SynthRoad frames (seed 3; never the evaluated seed-7 frames) with
# in-graph percentile ranks and OoD mask, parity check against PyTorch, generated OoD scenes,
# masks and overlays with instance boxes, and the OoD table of both tracks
# for PGN uni/oh, max softmax, entropy, MC dropout (8 samples) and a 3-member deep ensemble;
# plus an INT8 copy of the model (same calibration frames, ~20 s) whose PGN maps are rows "[int8]" of the same table.
DEMO := engines/demo
DEMO_CKPT := export/models/demo_synthroad.pth
DEMO_MODEL := $(DEMO)/demo_synthroad.pgn.onnx
DEMO_INT8 := $(DEMO)/demo_synthroad.int8.pgn.onnx
DEMO_MEMBERS := $(foreach s,1 2 3,export/models/demo_synthroad_seed$(s).pth)
DEMO_FRAMES ?= 20
DEMO_CALIB_FRAMES ?= 8
demo: $(STAMP)
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	@echo "== 1/6 pgn-synthroad: $(DEMO_CALIB_FRAMES) in-distribution frames to calibrate on (seed 3, val split: no OoD object)"
	$(BIN)/pgn-synthroad --out $(DEMO)/calibration --frames $(DEMO_CALIB_FRAMES) --seed 3 --layout cityscapes
	@echo "== 2/6 pgn-export: graft PGN (last and penultimate layer) onto the shipped checkpoint, calibrate, in-graph percentile ranks and OoD mask"
	$(BIN)/pgn-export $(DEMO_CKPT) --p 0.5 --label both --layer both --pred --baselines -o $(DEMO_MODEL) \
	  --calib $(DEMO)/calibration/cityscapes/leftImg8bit --normalize
	@echo "== 2b/6 pgn-export --precision int8: the same model with its network in INT8 Q/DQ (PGN float32), calibrated on the same frames"
	$(BIN)/pgn-export $(DEMO_MODEL) --precision int8 --calib $(DEMO)/calibration/cityscapes/leftImg8bit -o $(DEMO_INT8)
	@echo "== 3/6 pgn-check: the grafted model against PyTorch"
	$(BIN)/pgn-check $(DEMO_MODEL) --reference $(DEMO_CKPT)
	@echo "== 4/6 pgn-synthroad: $(DEMO_FRAMES) out-of-distribution scenes per track (seed 7, unseen in training and calibration)"
	$(BIN)/pgn-synthroad --out $(DEMO)/synthroad --frames $(DEMO_FRAMES) --seed 7 --layout roadobstacle21 roadanomaly21
	@echo "== 5/6 pgn-run: segmentation, PGN heatmap, OoD mask, overlay with instance boxes per image"
	$(BIN)/pgn-run $(DEMO_MODEL) $(DEMO)/synthroad/dataset_AnomalyTrack/images --out $(DEMO)/overlays
	@echo "== 6/6 pgn-eval: the paper's OoD table on both tracks"
	for track in road_obstacle21 road_anomaly21; do \
	  $(BIN)/pgn-eval $(DEMO_MODEL) --dataset $$track:$(DEMO)/synthroad --out $(DEMO)/eval \
	    --checkpoint $(DEMO_CKPT) --mc-dropout 8 --ensemble $(DEMO_MEMBERS) --variant int8=$(DEMO_INT8) || exit 1; \
	done
	@echo "Overlays: $(DEMO)/overlays   Reports: $(DEMO)/eval"

# pgn-mine on the demo model (exported here when `make demo` has not run): a generated "drive" of
# 30 in-distribution scenes with 10 out-of-distribution ones among them is mined; the OoD scenes
# should top the ranking. Calibrated on 20 other in-distribution scenes (default threshold = q0.99).
MINE_DEMO := engines/mine-demo
MINE_ARGS ?=
MINE_DRIVE := $(MINE_DEMO)/drive/cityscapes/leftImg8bit $(MINE_DEMO)/drive/dataset_AnomalyTrack/images
mine-demo: $(STAMP)
	test -f $(DEMO_MODEL) || (mkdir -p $(DEMO) && \
	  $(BIN)/pgn-export $(DEMO_CKPT) --p 0.5 --label both --pred --baselines -o $(DEMO_MODEL))
	rm -rf $(MINE_DEMO) && mkdir -p $(MINE_DEMO)
	@echo "== 1/4 pgn-synthroad: calibration scenes, and a drive of in- and out-of-distribution scenes"
	$(BIN)/pgn-synthroad --out $(MINE_DEMO)/calibration --frames 20 --seed 11 --layout cityscapes --quiet
	$(BIN)/pgn-synthroad --out $(MINE_DEMO)/drive --frames 30 --seed 12 --layout cityscapes --quiet
	$(BIN)/pgn-synthroad --out $(MINE_DEMO)/drive --frames 10 --seed 13 --layout roadanomaly21 --quiet
	@echo "== 2/4 pgn-calibrate: the default OoD threshold from in-distribution pixels"
	$(BIN)/pgn-calibrate $(DEMO_MODEL) $(MINE_DEMO)/calibration/cityscapes/leftImg8bit -o $(MINE_DEMO)/model.pgn.onnx
	@echo "== 3/4 pgn-mine: rank the drive's frames; Parquet tables, overlays and a gallery of the top 10"
	$(BIN)/pgn-mine $(MINE_DEMO)/model.pgn.onnx $(MINE_DRIVE) --out $(MINE_DEMO)/mined --top 10 $(MINE_ARGS)
	@echo "== 4/4 pgn-mine again: resumes, skips every frame already mined"
	$(BIN)/pgn-mine $(MINE_DEMO)/model.pgn.onnx $(MINE_DRIVE) --out $(MINE_DEMO)/mined --top 10 $(MINE_ARGS)
	@echo "Gallery: $(MINE_DEMO)/mined/index.html"

clean:
	rm -rf $(VENV) .venv-serve build *.egg-info cpp_bindings/build pgn_deploy/_native*.so
