"""Smoke test of benchmarks/learning_curves.py: a tiny run writes its curve after every chunk,
``--extend`` continues it from the checkpoint, and ``--plot`` draws it."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "learning_curves.py"


def load_script():
    spec = importlib.util.spec_from_file_location("learning_curves_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_curve_is_written_extended_and_plotted(water_file, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    script = load_script()
    config = tmp_path / "water_tiny.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": str(water_file), "output_dir": str(tmp_path / "run"), "seed": 0,
        "split": {"n_train": 4, "n_validation": 2, "n_test": 2, "seed": 1},
        "model": {"channels": [8, 4, 4], "num_layers": 1, "num_radial": 6, "radial_hidden": 8},
        "optim": {"dtype": "float64", "batch_size": 2, "max_epochs": 1000},
    }))
    out = tmp_path / "curves"
    arguments = [str(config), "--heldout", str(water_file), "--interval-minutes", "0.003",
                 "--out", str(out)]
    monkeypatch.setattr("sys.argv", ["learning_curves.py", *arguments, "--budget-minutes",
                                     "0.005"])
    script.main()
    first = json.loads((out / "water_tiny.json").read_text())
    assert first["points"] and first["heldout"] == str(water_file)
    for point in first["points"]:
        for split, n in (("test", 2), ("heldout", 10)):
            assert point[split]["n_geometries"] == n
            assert point[split]["hamiltonian_mae_ueh"] > 0
    budget = first["points"][-1]["cpu_minutes"] + 0.005  # one chunk more (setup included)
    monkeypatch.setattr("sys.argv", ["learning_curves.py", *arguments, "--budget-minutes",
                                     str(budget), "--extend"])
    script.main()
    extended = json.loads((out / "water_tiny.json").read_text())
    assert extended["points"][:len(first["points"])] == first["points"]
    assert len(extended["points"]) > len(first["points"])
    minutes = [p["cpu_minutes"] for p in extended["points"]]
    epochs = [p["epoch"] for p in extended["points"]]
    assert minutes == sorted(minutes) and epochs == sorted(epochs)
    assert Path(script.plot(str(out))).stat().st_size > 0
