"""The command line's small promises: --version, aligned `segformer models`, and progress bars written as plain
lines when the output is not a terminal (a log file)."""

import io
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
    stream = PlainLines(log, interval=0)
    for _ in tqdm(range(3), file=stream, mininterval=0, miniters=1, desc="work", ascii=True):
        pass
    stream.write("done\n")
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and all(line.strip() for line in lines)
    assert lines[0].startswith("work:   0%") and lines[-2].startswith("work: 100%") and lines[-1] == "done"


def test_plain_lines_are_rate_limited_but_keep_the_last_status():
    log = io.StringIO()
    stream = PlainLines(log, interval=3600)
    for _ in tqdm(range(50), file=stream, mininterval=0, miniters=1, desc="work", ascii=True):
        pass
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("work:   0%") and lines[1].startswith("work: 100%|##########| 50/50")


def test_the_cli_switches_to_plain_lines_only_off_a_terminal():
    code = ("import sys; from segformer.cli.common import plain_progress_lines\n"
            "with plain_progress_lines():\n"
            "    print(type(sys.stderr).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["PlainLines"]
    with plain_progress_lines():  # nested use does not wrap twice
        with plain_progress_lines():
            assert not isinstance(getattr(sys.stderr, "stream", None), PlainLines)
