"""The command line's small promises: --version, aligned `segformer models`, and progress bars written as plain
lines when the output is not a terminal (a log file)."""

import io
import os
import subprocess
import sys

import pytest
from tqdm import tqdm

import segformer
from segformer import cli
from segformer.cli.common import PlainLines, plain_progress_lines


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"segformer {segformer.__version__}"


def test_models_columns_are_aligned(capsys):
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    hub_column = lines[0].index("hub id")
    description_column = lines[0].index("description")
    for line in lines[1:]:
        name, hub = line.split()[:2]
        assert line.index(hub, len(name)) == hub_column and line[description_column - 2:description_column] == "  "


def test_progress_bars_become_plain_lines_in_a_log():
    log = io.StringIO()
    stream = PlainLines(log)
    for _ in tqdm(range(3), file=stream, mininterval=0, miniters=1, desc="work", ascii=True):
        pass
    stream.write("done\n")
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and all(line.strip() for line in lines)
    assert lines[0].startswith("work:   0%") and lines[-2].startswith("work: 100%") and lines[-1] == "done"


def test_the_cli_switches_to_plain_lines_only_off_a_terminal():
    code = ("import sys, os; from segformer.cli.common import plain_progress_lines\n"
            "with plain_progress_lines():\n"
            "    print(type(sys.stderr).__name__, os.environ.get('TQDM_MININTERVAL'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "TQDM_MININTERVAL"}).stdout
    assert out.split() == ["PlainLines", "30.0"]
    with plain_progress_lines():  # nested use does not wrap twice
        with plain_progress_lines():
            assert not isinstance(getattr(sys.stderr, "stream", None), PlainLines)
