"""Session fixtures: the MMSegmentation oracle (plain functions in tests/helpers.py), the server tests'
(test_serve*.py), and test-session defaults: the CLI's
`--runtime auto` (an OpenVINO conversion and a timed probe per model and input size) and the bf16 probe are
for users; tests that exercise them ask for them explicitly (tests/test_runtimes.py), and no test writes the
probe cache in the user's home."""

import os
from pathlib import Path

import pytest

import helpers

os.environ.setdefault("SEGFORMER_RUNTIME", "torch")
os.environ.setdefault("SEGFORMER_CACHE_DIR", "")


@pytest.fixture(scope="session")
def mmseg_python() -> Path:
    """The MMSegmentation oracle venv's python; the test skips, saying why, without it."""
    return helpers.mmseg_python()


@pytest.fixture(scope="session")
def mmseg_oracle() -> tuple[str, str]:
    """(python, mmcv shim) of the oracle; the test skips, saying why, without the venv."""
    return helpers.mmseg_oracle()


@pytest.fixture(scope="session")
def served_model(tmp_path_factory):
    from serve_helpers import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("serve") / "model")


@pytest.fixture(scope="session")
def server(served_model, tmp_path_factory):
    """One server for the API and browser tests: small limits so that 413 and 503 are cheap to reach."""
    from serve_helpers import Server

    srv = Server(served_model, "--max-queue", "4", "--max-batch", "4", "--max-body-mb", "2", "--max-pixels", "4e6",
                 log=tmp_path_factory.mktemp("serve_log") / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is fastest, and on a shared machine more threads oversubscribe the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
