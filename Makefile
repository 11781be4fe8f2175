# pgn-deploy developer entry points. Everything runs inside .venv in this folder.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install install-gpu venv-serve cpp test demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

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

# Builds and tests the C++ library when its inputs can be had (else prints SKIP and why),
# then runs the whole pytest suite (C++ parity tests skip with the reason when unbuilt).
test: $(STAMP) $(SERVE_STAMP)
	PYTHON=$(CURDIR)/$(BIN)/python cpp_bindings/scripts/build.sh --if-available --test
	$(BIN)/python -m pytest -n 2 --dist loadscope $(PYTEST_ARGS)

# The project's latency study (about 25 minutes on 2 CPU cores); results in benchmarks/results/.
# BENCH_ARGS="--backend ort-cuda --torch-device cuda" measures a GPU.
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m benchmarks --threads 1 --clock cpu --out benchmarks/results --force $(BENCH_ARGS)

# The whole pipeline on the shipped demo model: export (uni and oh, p = 0.5, pred, baselines),
# parity check against PyTorch, generated OoD scenes, overlays, and the OoD table of both tracks
# for PGN uni/oh, max softmax, entropy, MC dropout (8 samples) and a 3-member deep ensemble.
DEMO := engines/demo
DEMO_CKPT := export/models/demo_synthroad.pth
DEMO_MODEL := $(DEMO)/demo_synthroad.pgn.onnx
DEMO_MEMBERS := $(foreach s,1 2 3,export/models/demo_synthroad_seed$(s).pth)
DEMO_FRAMES ?= 20
demo: $(STAMP)
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	@echo "== 1/5 pgn-export: graft PGN onto the shipped checkpoint"
	$(BIN)/pgn-export $(DEMO_CKPT) --p 0.5 --label both --layer both --pred --baselines -o $(DEMO_MODEL)
	@echo "== 2/5 pgn-check: the grafted model against PyTorch"
	$(BIN)/pgn-check $(DEMO_MODEL) --reference $(DEMO_CKPT)
	@echo "== 3/5 pgn-synthroad: $(DEMO_FRAMES) out-of-distribution scenes per track (seed 7, unseen in training)"
	$(BIN)/pgn-synthroad --out $(DEMO)/synthroad --frames $(DEMO_FRAMES) --seed 7 --layout roadobstacle21 roadanomaly21
	@echo "== 4/5 pgn-run: segmentation, PGN heatmap, OoD mask and overlay per image"
	$(BIN)/pgn-run $(DEMO_MODEL) $(DEMO)/synthroad/dataset_AnomalyTrack/images --out $(DEMO)/overlays
	@echo "== 5/5 pgn-eval: the paper's OoD table on both tracks"
	for track in road_obstacle21 road_anomaly21; do \
	  $(BIN)/pgn-eval $(DEMO_MODEL) --dataset $$track:$(DEMO)/synthroad --out $(DEMO)/eval \
	    --checkpoint $(DEMO_CKPT) --mc-dropout 8 --ensemble $(DEMO_MEMBERS) || exit 1; \
	done
	@echo "Overlays: $(DEMO)/overlays   Reports: $(DEMO)/eval"

clean:
	rm -rf $(VENV) .venv-serve build *.egg-info cpp_bindings/build pgn_deploy/_native*.so
