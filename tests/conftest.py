"""Session fixtures shared by the server tests (test_serve*.py); other tests do not use them."""

import pytest


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
