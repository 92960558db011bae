"""Smoke test of benchmarks/speed.py --quick: it runs, and its numbers are consistent."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


def load_script():
    spec = importlib.util.spec_from_file_location("speed_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_alkane_geometry_is_chemical():
    atoms = load_script().alkane(4)
    assert atoms.get_chemical_formula() == "C4H10"
    distances = atoms.get_all_distances()
    carbon = atoms.numbers == 6
    bonded_h = (distances[carbon][:, ~carbon] < 1.2).sum(0)
    assert (bonded_h == 1).all()  # every H bonded to exactly one C
    assert distances[~carbon][:, ~carbon][~np.eye(10, dtype=bool)].min() > 1.6


def test_quick_run_writes_consistent_results(tmp_path):
    pytest.importorskip("matplotlib")
    results = load_script().main(["--quick", "--threads", "1", "--pyscf-max-atoms", "0",
                                  "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "speed_quick.json").read_text())
    assert (tmp_path / "speed_quick.png").stat().st_size > 0
    assert set(saved["molecules"]) == {"water", "ethanol"}
    for entry in results["molecules"].values():
        assert entry["pyscf_pbe_def2svp_s"] is None and "pyscf_skipped" in entry
        for dtype in ("float64", "float32"):
            assert 0 < entry[f"ours_{dtype}_net_s"] < 60
            split = entry[f"split_{dtype}_net_s"]
            # timed parts are positive; network_* are differences of two medians timed
            # apart, which another process's load can push below zero: only finite
            assert all(0 < split[k] for k in ("model_forward", "eigensolver_energy", "backward",
                                              "integrals_forward", "integrals_backward"))
            assert all(math.isfinite(split[k]) for k in ("network_forward", "network_backward"))
        assert math.isfinite(entry["peak_memory_float64_mib"])
