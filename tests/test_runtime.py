"""retain_freed_memory(): freed large blocks stay in the process for reuse (Linux/glibc), and the env switch."""

import subprocess
import sys

import pytest

SCRIPT = """
import sys, torch
from segformer.runtime import configure_from_env

def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS:"))

enabled = configure_from_env()
torch.ones(1 << 20).sum()  # first tensor op: torch's own lazy set-up is not counted
base = rss_mib()
x = torch.ones(BLOCK_MIB * 2**20 // 4)  # touched
del x
print(enabled, rss_mib() - base)
"""
BLOCK_MIB = 256  # large beside the few MiB the interpreter's own RSS drifts by


def _run(env_value):
    env = {"PATH": "/usr/bin:/bin"} | ({"SEGFORMER_RETAIN_MEMORY": env_value} if env_value is not None else {})
    script = SCRIPT.replace("BLOCK_MIB", str(BLOCK_MIB))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    enabled, kept = out.stdout.split()
    return enabled == "True", int(kept)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_freed_blocks_are_kept_only_when_enabled():
    enabled, kept = _run(None)
    assert enabled and kept >= 0.9 * BLOCK_MIB  # the freed block stays mapped, ready for the next pass
    enabled, kept = _run("0")
    assert not enabled and kept < 0.25 * BLOCK_MIB  # glibc's default: a big block is an mmap, returned on free
