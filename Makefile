# Two commands do all the set-up on a fresh machine (both idempotent):
#   make test   create .venv if missing, install the project with its test extras (exact versions:
#               constraints.txt), run pytest
#   make demo   same set-up, then the main job on the bundled demo data
#   make demo-video  the same on the bundled video clips
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-all demo demo-video bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# re-install only when the project's requirements change; constraints.txt holds the exact versions
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt torch torchvision
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) demo.py

demo-video: $(STAMP)
	$(PY) demo.py --video

bench: $(STAMP)
	$(PY) bench/model_speed.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
