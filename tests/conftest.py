"""Shared fixtures. Tests run on the CPU by default; GPU tests carry the `gpu` marker."""

from __future__ import annotations

import os

# Triton decides interpreted-or-compiled when latprof.kernels is first imported: without a GPU,
# the kernels run under the interpreter on CPU tensors. Set TRITON_INTERPRET=0 on a GPU machine.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch
from click.testing import CliRunner

from latprof.cli import main


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the marker, not any keyword or parametrize id
            item.add_marker(skip)


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Run the CLI in a temporary folder; returns a function(args) -> click Result."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LATPROF_TABLES", str(tmp_path / "tables"))
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    return invoke


@pytest.fixture(scope="session")
def small_table(tmp_path_factory):
    """A real CPU table of 6 tiny shapes, measured once per test session with the quick protocol."""
    from latprof.measure import sweep as sweep
    from latprof.measure.timing import Protocol

    path = tmp_path_factory.mktemp("tables") / "small.parquet"
    cfg = sweep.SweepConfig(grid=dict(cin=[4], cout=[4, 8, 12], hw=[8], kernel=[1, 3], stride=[1], groups=[1]),
                            out=path, protocol=Protocol.quick(), progress=False)
    sweep.run(cfg)
    return path
