"""Smoke test of benchmarks/sap_baselines.py on the session's small water set: every SAP fit is
measured, and what the numbers must say physically holds (the SAP baseline leaves a much smaller
target than H or H - H_core; each fit has its charge count and integral times)."""

import json

from benchmark_scripts import load_benchmark


def load_script():
    return load_benchmark("sap_baselines")


def test_every_fit_is_measured_and_shrinks_the_target(water_file, tmp_path):
    script = load_script()
    script.main(["--data", str(water_file), "--n", "6", "--repeats", "3", "--out", str(tmp_path)])
    (entry,) = json.loads((tmp_path / "sap_baselines.json").read_text())["data"]
    assert entry["n_records"] == 6
    targets = entry["targets"]
    assert set(targets) == {"H", "core", "sapgrasplarge", "sapgraspsmall", "sapcompact"}
    for fit in ("sapgrasplarge", "sapgraspsmall", "sapcompact"):
        # the largest elements (O 1s rows) of H and H - H_core are > 10 Eh; the screened
        # nuclei of H_core + V_SAP leave more than 5x less
        assert targets[fit]["largest_abs_eh"] < 0.2 * targets["H"]["largest_abs_eh"]
        assert targets[fit]["largest_abs_eh"] < 0.2 * targets["core"]["largest_abs_eh"]
        assert entry["times_ms"][fit]["first"] > 0
    assert entry["n_gaussians"]["sapcompact"] == {"H": 2, "O": 3}
    assert entry["n_gaussians"]["sapgrasplarge"] == {"H": 5, "O": 11}
