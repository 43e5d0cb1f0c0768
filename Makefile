# Set-up, the main job and the tests. Everything installs into ./.venv (and the MMSegmentation, MMPose and
# imagecorruptions oracles into ./.venv-mmseg, ./.venv-mmpose and ./.venv-corrupt, used only by the tests). torch
# is pinned to the CPU build this machine provides; on a GPU machine set TORCH_SPEC to the CUDA build you want
# (see README).
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
MMSEG_VENV := .venv-mmseg
MMPOSE_VENV := .venv-mmpose
CORRUPT_VENV := .venv-corrupt
PYTEST_ARGS ?=

.PHONY: demo test lint clean browser

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev,onnx,serve,coco,openvino,corruptions,tensorboard]"
	touch $@

# MMSegmentation 1.2.2 as an independent oracle (DESIGN.md section 8); never imported by the package.
$(MMSEG_VENV)/.installed:
	test -x $(MMSEG_VENV)/bin/python || $(PYTHON) -m venv $(MMSEG_VENV)
	$(MMSEG_VENV)/bin/python -m pip install -q --upgrade pip
	$(MMSEG_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)" mmengine==0.10.7 mmcv-lite==2.1.0 \
		mmsegmentation==1.2.2 ftfy regex
	touch $@

# Debian's Chromium and its WebDriver for the web page test (tests/test_serve_browser.py); apt runs only when
# one of them is missing. Never a browser download of its own.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || { \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q \
		--no-install-recommends chromium chromium-driver; }

# MMPose 1.3.2 as an independent oracle for the pose codec, PCK and heads (tests/test_pose_mmpose_parity.py).
# mmpose's metadata names torchvision and chumpy, which the code the tests use never imports: it goes in without
# dependencies, its real ones are listed here (mmdet 3.2: mmpose.models imports mmdet.utils). xtcocotools' wheels
# are built against numpy 1.x, so it is built here against this venv's numpy. mmcv's compiled ops: the project's
# shim, tests/oracles/mmcv_ops_shim.py.
$(MMPOSE_VENV)/.installed:
	test -x $(MMPOSE_VENV)/bin/python || $(PYTHON) -m venv $(MMPOSE_VENV)
	$(MMPOSE_VENV)/bin/python -m pip install -q --upgrade pip
	$(MMPOSE_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)" mmengine==0.10.7 mmcv-lite==2.1.0 \
		json_tricks==3.17.3 munkres==3.0.0 scipy==1.17.1 opencv-python==5.1.0.95 matplotlib pillow six \
		cython setuptools wheel
	$(MMPOSE_VENV)/bin/python -m pip install -q --no-deps mmpose==1.3.2 mmdet==3.2.0
	$(MMPOSE_VENV)/bin/python -m pip install -q --no-deps --no-build-isolation --no-binary xtcocotools \
		xtcocotools==1.14.3
	touch $@

# imagecorruptions 1.1.2 as the oracle of segformer.corruptions (tests/test_corruptions.py); never imported by the
# package. It needs numpy < 2 (np.float_), setuptools < 81 (pkg_resources) and OpenCV; scikit-image 0.19, the last
# that takes its `multichannel=` argument, has no Python 3.11 wheel, so 0.20 runs it through a one-line adapter
# (tests/oracles/corruptions_oracle.py). These pins all have Python 3.11 wheels.
$(CORRUPT_VENV)/.installed:
	test -x $(CORRUPT_VENV)/bin/python || $(PYTHON) -m venv $(CORRUPT_VENV)
	$(CORRUPT_VENV)/bin/python -m pip install -q setuptools==69.5.1 numpy==1.26.4 scipy==1.11.4 \
		scikit-image==0.20.0 opencv-python-headless==4.8.1.78 Pillow==10.4.0
	$(CORRUPT_VENV)/bin/python -m pip install -q --no-deps imagecorruptions==1.1.2
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/demo.py --out demo_out

lint: $(VENV)/.dev
	$(PY) -m ruff check src tests benchmarks examples

test: $(VENV)/.dev $(MMSEG_VENV)/.installed $(MMPOSE_VENV)/.installed $(CORRUPT_VENV)/.installed browser
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(MMSEG_VENV) $(MMPOSE_VENV) $(CORRUPT_VENV) demo_out .pytest_cache
