# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv in the repository and install everything first if needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pip prints a warning per package for this registry's unused local indexes: keep them in a log
# and show the log (without those lines) only when pip fails.
PIP := $(PY) -m pip install --progress-bar off
PIP_LOG := $(VENV)/pip-install.log
SHOW_LOG_AND_FAIL := (grep -v "^WARNING: Location" $(PIP_LOG); exit 1)

.PHONY: install test demo benchmark clean

install: $(STAMP)

$(STAMP): requirements.txt setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	@echo "Installing into $(VENV) (first time: about 6 GB, a few minutes)..."
	$(PIP) -r requirements.txt >$(PIP_LOG) 2>&1 || $(SHOW_LOG_AND_FAIL)
	$(PIP) --no-deps -e . >>$(PIP_LOG) 2>&1 || $(SHOW_LOG_AND_FAIL)
	$(PY) -c "import torch, open_clip, onnxruntime, rclpy, cv2; print('install ok: torch', torch.__version__, 'open_clip', open_clip.__version__)"
	touch $(STAMP)

test: install
	$(PY) -m pytest tests -q -rs

demo: install
	$(VENV)/bin/adu demo

clean:
	rm -rf $(VENV) build install log *.egg-info
