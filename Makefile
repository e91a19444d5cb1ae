# Two commands do all the set-up on a fresh machine (both idempotent):
#   make test   create .venv if missing, install the project with its test extras (exact versions:
#               constraints.txt), run the fast tests (make test-all: every test)
#   make demo   same set-up, then the main job on the bundled demo data
#   make demo-video  the same on the bundled video clips
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-all demo demo-video bench bench-report gpu-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# re-install only when the project's requirements change; constraints.txt holds the exact versions
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt torch torchvision
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# on every core (at most 4 workers); the tests that launch runs share one worker (xdist group
# "launches"), so two multi-process runs never compete for the CPUs and their timeouts hold
XDIST := -n auto --maxprocesses 4 --dist loadgroup

# units, every shipped config composed, one two-process DDP launch of train.py
test: $(STAMP)
	$(PY) -m pytest $(XDIST) -m "not slow" -q

# everything: what CI runs (its log ends with the 25 slowest tests, where CI time goes)
test-all: $(STAMP)
	$(PY) -m pytest $(XDIST) -q --durations=25

demo: $(STAMP)
	$(PY) demo.py

demo-video: $(STAMP)
	$(PY) demo.py --video

bench: $(STAMP)
	$(PY) bench/model_speed.py

# every figure of docs/benchmarks.md: each script writes docs/results/NAME.json (its results, this exact
# command and the machine), then bench/report.py rewrites the results blocks from them. Settings fixed so
# that the whole report takes about 10 minutes on a 2-core CPU (run it on a quiet machine).
bench-report: $(STAMP)
	$(PY) bench/parity.py --json docs/results/parity.json
	$(PY) bench/model_speed.py --batch-size 4 --json docs/results/model_speed.json
	$(PY) bench/train_throughput.py --json docs/results/train_throughput.json
	$(PY) bench/video_loader.py --json docs/results/video_loader.json
	$(PY) bench/image_loader.py --json docs/results/image_loader.json
	$(PY) bench/video_prepare.py --json docs/results/video_prepare.json
	$(PY) bench/memory.py --sizes 224,320,448 --json docs/results/memory.json
	$(PY) bench/export_roundtrip.py --json docs/results/export_roundtrip.json  # make demo's classifier, if there
	$(PY) bench/report.py

# the prepared GPU check (bench/gpu_check.py): about 8 minutes on one H100; results in $(OUT)/gpu_check.{json,md}
OUT ?= gpu-check
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py --out $(OUT)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
