# Two commands on a fresh machine: `make run` and `make test` (each sets up .venv when needed).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test corpus model bench clean

# every install takes its versions from constraints.txt (the environment the model and tests were made in)
PIP_INSTALL := $(BIN)/pip install --quiet -c constraints.txt

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/pip || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU torch first (from the machine's wheel cache); sentence-transformers then finds it installed
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e '.[dev,st]'
	touch $(STAMP)

# what the service needs and nothing more (no torch, no browser, no fuzzer): `make run` on a user's machine
RUN_STAMP := $(VENV)/.installed-run
$(RUN_STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/pip || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(PIP_INSTALL) -e .
	touch $(RUN_STAMP)

setup: $(STAMP)

# the service on embedded defaults: SQLite in var/, the shipped model, corpora/demo.csv loaded on first start
run: $(RUN_STAMP)
	$(BIN)/triage serve --demo

# lint-imports first: the layers in pyproject.toml ([tool.importlinter]) say which way data flows
test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q tests

# corpora/suggestions.csv is generated from the hand-written slices (corpora/slices/*.jsonl)
corpus: $(STAMP)
	$(BIN)/python corpora/build_corpus.py

TRAIN_ARGS := --data corpora/suggestions.csv --text-col title --text-col text --label-col domain \
	--scope-col scope --department-col department --group-col topic

# words + characters: on real messages sentence-embedding features added nothing to domain or scope
# (bench/real_classify.py) and cost 4x the time; an office may still train with --embeddings
model: $(STAMP)
	$(BIN)/triage train $(TRAIN_ARGS) --version default-$$(date +%Y.%m.%d) --out models/default

bench: $(STAMP)
	$(BIN)/python bench/classify_throughput.py --model models/default
	$(BIN)/python bench/batch_scale.py --model models/default --sizes 10000,100000,1000000 --engines local,dask
	$(BIN)/python bench/topics_scale.py
	$(BIN)/python bench/cross_writer.py
	$(BIN)/python bench/api_latency.py
	$(BIN)/python bench/load.py --n 20000 --concurrency 64 --workers 2
	$(BIN)/python bench/load.py --n 20000 --concurrency 64 --workers 2 --kill-at 0.5
	$(BIN)/python bench/load.py --n 20000 --concurrency 64 --workers 2 --database postgresql --restart-postgres-at 0.5

clean:
	rm -rf $(VENV) .pytest_cache tests/artifacts
