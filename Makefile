# The two commands the README promises: `make demo` and `make test`. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
OPENCV_HEADLESS := opencv-python-headless==5.0.0.93
MEDIAPIPE_MODEL_WHEEL := mediapipe==0.10.14

export IDENTITY_PIPELINE_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export PYTHONUNBUFFERED := 1

.PHONY: install demo test ui ui-postgres label lint clean-outputs

install: $(STAMP)

# torch first: this exact release's CPU build lies on the machine's disk; letting the resolver
# pick torch would pull a multi-GB CUDA build. Then the project, then the opencv swap.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	@# insightface depends on opencv-python (GUI build); both ship the same cv2/ folder, so keep
	@# exactly one: the headless build.
	$(PIP) uninstall --quiet -y opencv-python opencv-contrib-python opencv-contrib-python-headless || true
	$(PIP) install --quiet --force-reinstall --no-deps $(OPENCV_HEADLESS)
	@# The offline person segmenters: MediaPipe's selfie, pose and hand models (Apache-2.0) ship
	@# inside this wheel. Only the .tflite files are used (run by LiteRT, else cv2.dnn); --no-deps
	@# keeps mediapipe's own pins (protobuf<5, opencv-contrib, jax) out. Never imported.
	$(PIP) install --quiet --no-deps $(MEDIAPIPE_MODEL_WHEEL)
	@touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

# The CPU demo's base model: a tiny random Qwen-Image (transformer, VAE, text encoder and
# tokenizer) built offline from configs in seconds; data/pipeline.yaml points training at it.
TINY_MODEL := models/tiny-qwen-image

$(TINY_MODEL)/model_index.json: | $(STAMP)
	$(PY) -m identity_pipeline.training.tiny_models --out models --family qwen-image

demo: install $(DAGSTER_HOME)/dagster.yaml $(TINY_MODEL)/model_index.json
	$(VENV)/bin/identity-pipeline demo

label: install
	$(VENV)/bin/identity-pipeline label

# One pytest worker per core, whole test files per worker (module fixtures built once);
# TEST_WORKERS=0 runs in one process (for --pdb).
TEST_WORKERS ?= auto
test: install
	@$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

ui: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The UI and the daemon on PostgreSQL (deploy/postgres/dagster.yaml, history in .dagster_home_postgres/):
# the server that DAGSTER_PG_HOST (+ _PORT, _USER, _PASSWORD, _DB) names, or without it a local
# one kept in $(POSTGRES_DIR)/, started for the UI and stopped with it (127.0.0.1 only).
POSTGRES_DIR ?= .postgres
PG_DAGSTER_HOME := $(CURDIR)/.dagster_home_postgres
UI_PORT ?= 3000
UI_COMMAND = $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(UI_PORT)

$(PG_DAGSTER_HOME)/dagster.yaml: deploy/postgres/dagster.yaml
	@mkdir -p $(PG_DAGSTER_HOME)
	cp deploy/postgres/dagster.yaml $@

ui-postgres: install $(PG_DAGSTER_HOME)/dagster.yaml
	@export DAGSTER_HOME=$(PG_DAGSTER_HOME); \
	if [ -n "$$DAGSTER_PG_HOST" ]; then $(UI_COMMAND); \
	else $(PY) -m identity_pipeline.local_services --postgres $(POSTGRES_DIR) -- $(UI_COMMAND); fi

lint: install
	$(VENV)/bin/ruff check identity_pipeline identity_pipeline_tests benchmarks

# Asset outputs only; albums, labels and the Dagster history stay.
clean-outputs:
	rm -rf data/assets data/cache
