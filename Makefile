# Everything runs from a local virtual environment made with the Python 3.11 on PATH.
# `make demo` and `make test` set it up on first use (CPU torch, the version torch.txt pins; GPU
# users install their own torch into .venv first and it is kept).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.s2i-installed
DEMO   ?= data/demo
WORKERS ?= 0
# make train: stage 1 then stage 2 (re-running a finished run does nothing; a killed one resumes);
# MODEL=aivae|aivaegan trains a comparison model instead (docs/models.md), one stage, its paper's
# defaults: EPOCHS=100, BATCH=128, LATENT=64, ALPHA=2 (aivaegan), LR= to override the paper's rate
MODEL      ?= s2i
EMB        ?= 512
DATA       ?= data/vegas5
RUN        ?= $(if $(filter s2i,$(MODEL)),runs/emb$(EMB),runs/$(MODEL))
LATENT     ?= 64
ALPHA      ?= 2
EPOCHS     ?= 100
GRID_EVERY ?= 10
LR         ?=
LR_D       ?=
WIDTH      ?= 1.0
EPOCHS_AE  ?= 1000
EPOCHS_GAN ?= 4000
LOADERS    ?= 4
BATCH      ?= $(if $(filter s2i,$(MODEL)),64,128)
OPT        ?= sgd
LAM        ?= 0.1
MA_K       ?= 10
PRECISION  ?= fp32
DATA_ON_DEVICE ?= auto
INFORMATIVITY ?=
NPROC      ?= 1
# NPROC > 1: one DDP process per GPU (or CPU share) through torchrun; --run-dir because
# torchrun's own parser claims --run
S2I_MODEL  = $(if $(filter-out 1,$(NPROC)),$(BIN)/torchrun --standalone --nproc-per-node $(NPROC) -m s2i_model.cli,$(BIN)/s2i-model)
# make sweep: every embedding size trained (resumed), evaluated, then one report
EMBS       ?= 128 256 512 1024 2048
RUNS       ?= runs/sweep
SAMPLES    ?= 10
# make compare: every model of MODELS trained (resumed) into RUNS/<model> at one preset, evaluated
# alike (same build, test split, pictures per sound, seed, one real-frame classifier kept in RUNS),
# then one report over the models (docs/models.md).
MODELS       ?= s2i aivae aivaegan mmgan sound2scene
# reference rows (s2i_model/evaluate/reference.py), comma-separated: real, retrieval-<model>; empty:
# real, and retrieval in the audio space of each model that has one
REFERENCES   ?=
# one preset name for every model: paper (each model's paper settings), cpu (the built-in data on 2
# cores), test (the smallest run through every step); each model's presets live in its folder,
# s2i_model/models/<name>/__init__.py (s2i-model models lists them)
COMPARE_SIZE ?= paper
SEEDS        ?= 0
comma := ,
empty :=
space := $(empty) $(empty)

.PHONY: setup demo test test-fast bench train sweep compare clean help
help:
	@echo "make demo   set up .venv and run the whole pipeline on the built-in synthetic data"
	@echo "make test   set up .venv and run the test suite"
	@echo "make test-fast  the same without the minute-long tests (pytest -m 'not slow')"
	@echo "make train  EMB=512 DATA=data/vegas5 RUN=runs/emb512 [NPROC=8 WIDTH= EPOCHS_AE= EPOCHS_GAN= LAM= MA_K= PRECISION=fp32|bf16|fp16 DATA_ON_DEVICE=auto|on|off]"
	@echo "make train  MODEL=aivae|aivaegan DATA=data/vegas5 RUN=runs/aivae [ALPHA=2 LATENT=64 EPOCHS=100 BATCH=128 WIDTH= LR= NPROC=]"
	@echo "make train  MODEL=mmgan DATA=data/vegas5 RUN=runs/mmgan [EPOCHS_FEATURES=30 EPOCHS_MULTIMODAL=30 EPOCHS=200 BATCH=64 WIDTH= LR= NPROC=]"
	@echo "make sweep  EMBS=\"128 256 512 1024 2048\" DATA=data/vegas5 RUNS=runs/sweep [INFORMATIVITY=dir]"
	@echo "make train  MODEL=sound2scene DATA=data/vegas5 RUN=runs/s2s [EPOCHS_VISUAL=100 EPOCHS_GENERATOR=100 EPOCHS=50 BATCH=64 WIDTH= NEIGHBOURS=50 NPROC=]"
	@echo "make compare DATA=data/vegas5 RUNS=runs/compare [MODELS=\"s2i aivae aivaegan mmgan sound2scene\" REFERENCES=\"real lookup chance nearest-sound-s2i nearest-image-sound2scene\" COMPARE_SIZE=paper|cpu|test SEEDS=\"0 1 2\" INFORMATIVITY=dir]"
	@echo "make bench  run the benchmarks (figures go to docs/performance.md by hand)"

setup: $(STAMP)
$(STAMP): pyproject.toml torch.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q -r torch.txt
	$(BIN)/python -m pip install -q -e '.[test,live,fast]'
	touch $(STAMP)

# the learning test's data (20 videos a class of data seed 3, 30 % of the videos held out) and
# S2I's cpu preset (s2i_model/models/s2i/__init__.py): its command, λ = 0.1, with the epochs it had
# before the presets got equal budgets (issue 27): 40 + 240, the translator trained three times as long
demo: setup
	$(BIN)/s2i-data synth $(DEMO)/videos --videos-per-class 20 --seed 3
	$(BIN)/s2i-data build --root $(DEMO)/videos --classes baby,dog,rail,fireworks,water \
		--out $(DEMO)/shards --shard-size 32 --splits 0.6,0.1,0.3 --workers $(WORKERS)
	$(BIN)/s2i-data verify $(DEMO)/shards
	$(BIN)/s2i-data inspect $(DEMO)/shards --png $(DEMO)/contact-sheet.png
	$(BIN)/s2i-model train --model s2i --preset cpu --autoencoder-epochs 40 --translator-epochs 240 \
		--data $(DEMO)/shards --run $(DEMO)/run
	$(BIN)/s2i-model evaluate --run $(DEMO)/run --data $(DEMO)/shards --samples 4
	$(BIN)/s2i-model imagine --data $(DEMO)/shards --split test --run $(DEMO)/run -n 6 -o $(DEMO)/imagined-test.png
	@echo "demo finished: shards pictured in $(DEMO)/contact-sheet.png;"
	@echo "pictures imagined from held-out test sounds (real frame first) in $(DEMO)/imagined-test.png"

train: setup
ifeq ($(MODEL),s2i)
	$(S2I_MODEL) train-autoencoder --data $(DATA) --run-dir $(RUN) --emb $(EMB) --width $(WIDTH) \
		--epochs $(EPOCHS_AE) --batch-size $(BATCH) --optimizer $(OPT) --workers $(LOADERS) \
		--precision $(PRECISION) --data-on-device $(DATA_ON_DEVICE)
	$(S2I_MODEL) train-translator --data $(DATA) --run-dir $(RUN) --epochs $(EPOCHS_GAN) \
		--batch-size $(BATCH) --optimizer $(OPT) --lam $(LAM) --ma-k $(MA_K) --workers $(LOADERS) \
		--precision $(PRECISION) --data-on-device $(DATA_ON_DEVICE) $(if $(NARROW),--narrow-generator $(NARROW)) \
		$(if $(INFORMATIVITY),--informativity $(INFORMATIVITY))
else ifneq ($(filter $(MODEL),aivae aivaegan),)
	$(S2I_MODEL) train-$(MODEL) --data $(DATA) --run-dir $(RUN) --latent $(LATENT) --width $(WIDTH) \
		--epochs $(EPOCHS) --batch-size $(BATCH) --workers $(LOADERS) --grid-every $(GRID_EVERY) \
		--precision $(PRECISION) --data-on-device $(DATA_ON_DEVICE) \
		$(if $(filter $(MODEL),aivaegan),--alpha $(ALPHA) $(if $(LR_D),--lr-d $(LR_D))) $(if $(LR),--lr $(LR))
else ifeq ($(MODEL),mmgan)
	$(S2I_MODEL) train-mmgan --data $(DATA) --run-dir $(RUN) --width $(WIDTH) --workers $(LOADERS) \
		--epochs $(call mmgan_default,EPOCHS,200) --batch-size $(call mmgan_default,BATCH,64) \
		--grid-every $(GRID_EVERY) --precision $(PRECISION) --data-on-device $(DATA_ON_DEVICE) $(if $(LR),--lr $(LR)) \
		$(if $(EPOCHS_FEATURES),--epochs-features $(EPOCHS_FEATURES)) \
		$(if $(EPOCHS_MULTIMODAL),--epochs-multimodal $(EPOCHS_MULTIMODAL))
else ifeq ($(MODEL),sound2scene)
	$(S2I_MODEL) train-sound2scene --data $(DATA) --run-dir $(RUN) --width $(WIDTH) --workers $(LOADERS) \
		--epochs $(call mmgan_default,EPOCHS,50) --batch-size $(call mmgan_default,BATCH,64) \
		--grid-every $(GRID_EVERY) --precision $(PRECISION) --data-on-device $(DATA_ON_DEVICE) \
		$(if $(EPOCHS_VISUAL),--epochs-visual $(EPOCHS_VISUAL)) $(if $(EPOCHS_GENERATOR),--epochs-generator $(EPOCHS_GENERATOR)) \
		$(if $(LR_G),--lr-g $(LR_G)) $(if $(LR_D),--lr-d $(LR_D)) $(if $(D_STEPS),--d-steps $(D_STEPS)) \
		$(if $(NEIGHBOURS),--neighbours $(NEIGHBOURS))
else
	@echo "MODEL must be s2i, aivae, aivaegan, mmgan or sound2scene, not '$(MODEL)'" >&2; exit 2
endif
# mmgan's and sound2scene's own defaults (pix2pix's 200 cGAN epochs; the paper's 50 audio epochs;
# batch 64) unless EPOCHS= / BATCH= were given
mmgan_default = $(if $(filter command line environment,$(origin $(1))),$($(1)),$(2))

# Each size is its own make train (so a finished size is skipped and a killed one resumes),
# evaluated with the one real-frame classifier kept in RUNS, then the report over all of them.
sweep: setup
	set -e; for e in $(EMBS); do \
		$(MAKE) --no-print-directory -o setup train EMB=$$e RUN=$(RUNS)/emb$$e; \
		$(BIN)/s2i-model evaluate --run $(RUNS)/emb$$e --data $(DATA) --samples $(SAMPLES) \
			--proxy-cache $(RUNS)/judges.pt $(if $(INFORMATIVITY),--informativity $(INFORMATIVITY)); \
	done
	$(BIN)/s2i-model report $(RUNS) -o $(RUNS)/report

# s2i-model compare (s2i_model/evaluate/suite.py): every model of MODELS trained (resumed) into
# RUNS/<model> at its COMPARE_SIZE preset, evaluated alike (test split, pictures per sound, seed, one
# real-frame classifier kept in RUNS), the reference rows, then RUNS/report; a second run does nothing.
compare: setup
	$(BIN)/s2i-model compare --data $(DATA) --runs $(RUNS) --models "$(subst $(space),$(comma),$(strip $(MODELS)))" \
		--preset $(COMPARE_SIZE) --seeds "$(strip $(SEEDS))" $(if $(filter command line environment,$(origin SAMPLES)),--samples $(SAMPLES)) \
		$(if $(strip $(REFERENCES)),--references "$(subst $(space),$(comma),$(strip $(REFERENCES)))") \
		$(if $(INFORMATIVITY),--informativity $(INFORMATIVITY))

# what every test needs beyond .venv: the browser (the labelling and live pages) and PortAudio (the
# microphone), installed as root (elsewhere: advice; under CI=true a test that would skip fails).
# TEST_JOBS pytest-xdist workers, each torch process of the suite on one thread (tests/conftest.py):
# two fill CI's two cores; TEST_JOBS=0 runs the suite in one process. A module stays on one worker
# (loadscope: its module fixtures are made once), modules in collection order (tests/conftest.py).
# A worker that dies ends the run at once, naming its test: under loadscope, xdist's replacement
# worker left the run hanging until CI's time limit (issue 29's SIGSEGV, s2i_model/fast.py).
TEST_JOBS ?= 2
PYTEST = $(BIN)/python -m pytest -q --durations=15 $(if $(filter-out 0,$(TEST_JOBS)),-n $(TEST_JOBS) --dist loadscope --no-loadscope-reorder --max-worker-restart 0)
test: setup
	.ci/install-browser
	.ci/install-portaudio
	$(PYTEST)

# make test without the tests marked slow (learning, torchrun DDP runs, the wheel install)
test-fast: setup
	.ci/install-browser
	.ci/install-portaudio
	$(PYTEST) -m "not slow"

# bench/gpu.py: full width (the paper's network) on a GPU with `make bench GPU_BENCH=`; a quick
# small-width check of the script by default, since a CPU would take hours at width 1.0
GPU_BENCH ?= --width 0.0625 --steps 5 --workers 1
bench: setup
	$(BIN)/python bench/build.py
	$(BIN)/python bench/plan.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/gpu.py $(GPU_BENCH)
	$(BIN)/python bench/imagine.py
	$(BIN)/python bench/live.py

clean:
	rm -rf $(DEMO) bench/out .pytest_cache
