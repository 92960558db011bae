"""Shipping a potential (ase_phisnet.training.ship): metrics on the recorded test split,
the training domain, a model card, and the ``ase-phisnet ship`` recipe command."""

import json
import shutil

import numpy as np
import pytest

from ase_phisnet.cli import main
from ase_phisnet.core.domain import TrainingDomain
from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.electronic.model import reconfigured, with_exact_overlap
from ase_phisnet.electronic.model_file import load_model, save_model, training_domain
from ase_phisnet.training.evaluate import evaluate_model, trained_test_split
from ase_phisnet.training.ship import read_recipes, ship_potential


def test_ship_potential_card_of_a_band_structure_model(small_potential, tmp_path):
    """ship_potential evaluates the model on its recorded test split and writes weights,
    metrics and a card that names the energy model and the pair prior, leaves out the matrices
    it lacks, and gives the metrics on an extra data file's own test split."""

    path, data = small_potential("H2O")
    band = reconfigured(with_exact_overlap(load_model(path)), energy_model="band_structure",
                        matrices=("hamiltonian",), pair_repulsion="zbl")
    hot = str(tmp_path / "hot.h5")
    shutil.copy(data, hot)
    with open(path + ".json") as handle:
        training = json.load(handle)["training"]
    training["split"] = {**training["split"], "n_train": 8, "n_validation": 4, "n_test": 4}
    hot_split = {"seed": 7, "n_train": 10, "n_validation": 3, "n_test": 3}
    training["extra_data"] = [{"dataset": hot, "split": hot_split}]
    stage = tmp_path / "stage"
    stage.mkdir()
    save_model(band, stage / "best_model.pt", extra={"training": training})
    config = tmp_path / "stage.yaml"
    config.write_text(f"dataset: {data}\noutput_dir: {stage}\n")
    metrics = ship_potential(str(stage / "best_model.pt"), data, "water-band", [str(config)],
                             generate_command="ase-phisnet generate ...", hardware="test",
                             out_dir=str(tmp_path / "out"),
                             extra_data=[(hot, "ase-phisnet generate --temperature 900")])
    card = (tmp_path / "out" / "water-band.md").read_text()
    assert "'band_structure' energy model" in card and "overlap from PySCF's integrals" in card
    assert "core H MAE" not in card and "| S | exact, from the integrals |" in card
    assert "pair repulsion prior: ZBL" in card
    assert "`ase-phisnet generate --temperature 900`" in card
    assert "On the test split of `data/hot.h5` (3 geometries" in card
    with open(tmp_path / "out" / "water-band.pt.json") as handle:
        shipped = json.load(handle)
    assert shipped["training"]["extra_data"] == [{"dataset": "hot.h5", "split": hot_split}]
    assert shipped["extra_metrics"]["hot.h5"]["n_geometries"] == 3
    # The domain of the training geometries of both files: the molecule and its pair ranges.
    domain = TrainingDomain.from_dict(shipped["domain"])
    assert domain.compositions == ("H2O",) and set(domain.pair_ranges_ang) == {"H-H", "H-O"}
    dataset = HamiltonianDataset(data)
    with open(tmp_path / "out" / "water-band.pt.json") as handle:
        test = trained_test_split(json.load(handle), dataset)
    assert len(test) == 4
    again = evaluate_model(load_model(tmp_path / "out" / "water-band.pt").double(), dataset, test)
    # The shipped weights are float32 copies of the evaluated float64 model.
    assert metrics["energy_mae_mev"] == pytest.approx(again.energy_mae_mev, rel=1e-6)
    assert np.isfinite(metrics["force_mae_mev_per_ang"])


def test_ship_command_writes_every_potential_of_a_recipe(small_potential, tmp_path, capsys):
    """``ase-phisnet ship RECIPE`` ships each entry (shared keys at the top level), records
    the domain the model file carries, and ``--only`` picks one."""
    path, data = small_potential("H2O")
    stage = tmp_path / "stage"
    stage.mkdir()
    shutil.copy(path, stage / "best_model.pt")
    with open(path + ".json") as handle:
        trained = json.load(handle)
    trained["training"]["split"].update(n_train=8, n_validation=4, n_test=4)  # a test split
    with open(stage / "best_model.pt.json", "w") as handle:
        json.dump(trained, handle)
    config = tmp_path / "stage.yaml"
    config.write_text(f"dataset: {data}\noutput_dir: {stage}\n")
    recipe = tmp_path / "ship.yaml"
    recipe.write_text(
        f"out_dir: {tmp_path / 'out'}\ndataset: {data}\ngenerate_command: ase-phisnet generate\n"
        f"potentials:\n  - name: small-water\n    model: {stage / 'best_model.pt'}\n"
        f"    stage_configs: [{config}]\n  - name: small-water-exact\n"
        f"    model: {stage / 'best_model.pt'}\n    stage_configs: [{config}]\n"
        "    exact_overlap: true\n")
    assert [r.name for r in read_recipes(recipe)] == ["small-water", "small-water-exact"]
    assert main(["ship", str(recipe), "--only", "small-water-exact"]) == 0
    assert "small-water-exact.pt" in capsys.readouterr().out
    assert not (tmp_path / "out" / "small-water.pt").exists()
    shipped = load_model(tmp_path / "out" / "small-water-exact.pt")
    assert shipped.config.exact_overlap and "overlap" not in shipped.config.matrices
    with open(tmp_path / "out" / "small-water-exact.pt.json") as handle:
        meta = json.load(handle)
    assert training_domain(meta) == training_domain(trained) is not None


def test_a_recipe_without_potentials_is_refused(tmp_path):
    recipe = tmp_path / "ship.yaml"
    recipe.write_text("out_dir: potentials\n")
    with pytest.raises(ValueError, match="list under 'potentials'"):
        read_recipes(recipe)
    recipe.write_text("potentials:\n  - name: x\n    model: m.pt\n    dataset: d.h5\n"
                      "    generate_command: g\n    stage_configs: [a.yaml]\n    colour: red\n")
    with pytest.raises(ValueError, match="unknown keys.*colour"):
        read_recipes(recipe)
