# mmserve's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test install dev lint bench bench-realtime bench-async bench-async-memory bench-batch bench-precomputed bench-stream clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e '.[all]'

dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,all]'

demo: install
	$(BIN)/python -m models

test: dev
	$(BIN)/python -m tests.services ensure-redis
	$(BIN)/python -m tests.services ensure-promtool
	$(BIN)/python -m tests.services ensure-chromium
	$(BIN)/python -m pytest

lint: dev
	$(BIN)/ruff check .
	$(BIN)/mypy serving workers batch models

bench: dev
	$(BIN)/python benchmarks/predictor.py

bench-realtime: dev  # about 20 minutes; installs wrk (apt), MLServer and BentoML (own venvs) if absent
	$(BIN)/python benchmarks/realtime.py

bench-async: dev  # about 80 s; starts its own redis-server (apt-installed if absent)
	$(BIN)/python benchmarks/async.py

bench-async-memory: dev  # about 2 minutes; a 150 MiB and a 1 GiB CSV job, about 2 GB of disk
	$(BIN)/python benchmarks/async_memory.py

bench-batch: dev  # about 3 minutes; writes about 1.3 GB of parquet to a temporary folder
	$(BIN)/python benchmarks/batch.py

bench-precomputed: dev  # about 2 minutes; starts its own redis-server, installs wrk if absent
	$(BIN)/python benchmarks/precomputed.py

bench-stream: dev  # about 2 minutes; starts its own redis-server (apt-installed if absent)
	$(BIN)/python benchmarks/stream.py

clean:
	rm -rf $(VENV) .mmserve .pytest_cache
