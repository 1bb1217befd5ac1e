"""Loads one of the repository's scripts (bench/report.py, bench/peers.py, scripts/fault_figures.py)
as a module from its file, for the unit tests that check what it renders: a script is run as a file,
not imported as part of a package, so the tests load it the same way, afresh on each call."""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_script(relative: str) -> ModuleType:
    """The script at `relative` (to the repository's root), executed as a new module named after its
    folder and file (bench/report.py: `bench_report`)."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"{path.parent.name}_{path.stem}", path)
    assert spec is not None and spec.loader is not None, f"no script at {relative}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
