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
# vision_msgs, composition_interfaces, launch and launch_ros are on no registry here: built from
# the vendored upstream sources in ../shared/vendor (never copied into this repository) and
# installed into the venv itself (merge install: messages in its site-packages, libraries in
# its lib/, which the ROS wheels already put on the library path), so nothing needs sourcing.
VENDOR := ../shared/vendor
ROS_EXTRAS := $(VENV)/.ros-extras-installed
ROS_EXTRAS_LOG := $(VENV)/ros-extras.log

.PHONY: install test demo benchmark clean

install: $(STAMP) $(ROS_EXTRAS)

$(STAMP): requirements.txt setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	@echo "Installing into $(VENV) (first time: about 6 GB, a few minutes)..."
	$(PIP) -r requirements.txt >$(PIP_LOG) 2>&1 || $(SHOW_LOG_AND_FAIL)
	$(PIP) --no-deps -e . >>$(PIP_LOG) 2>&1 || $(SHOW_LOG_AND_FAIL)
	$(PY) -c "import torch, open_clip, onnxruntime, rclpy, cv2; print('install ok: torch', torch.__version__, 'open_clip', open_clip.__version__)"
	touch $(STAMP)

# Re-checked on every make while ../shared/vendor is missing; built once when it is there.
$(ROS_EXTRAS): $(STAMP)
	@if [ -x $(VENDOR)/build-ros-extras.sh ]; then \
	  echo "Building vision_msgs + launch from $(VENDOR) into $(VENV) (about 2 minutes)..."; \
	  $(VENDOR)/build-ros-extras.sh $(VENV) $(VENV) >$(ROS_EXTRAS_LOG) 2>&1 \
	    || { tail -40 $(ROS_EXTRAS_LOG); exit 1; }; \
	  $(PY) -c "from vision_msgs.msg import Detection2DArray; import launch_ros; print('ros extras ok')" \
	    && touch $@; \
	else \
	  echo "NOTE: $(VENDOR) not found: vision_msgs and launch are not installed; the node's"; \
	  echo "      vision_msgs outputs are off and the launch tests skip (see README)."; \
	fi

test: install
	$(PY) -m pytest tests -q -rs

demo: install
	$(VENV)/bin/adu demo

clean:
	rm -rf $(VENV) build install log *.egg-info
