"""The training loop: a tiny model overfits, checkpoints resume, partial and extra data files,
TraceGrad, dipole, energy and force terms train, DDP equals one process, CLI train/evaluate."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ase_phisnet.cli import main
from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.electronic.model_file import load_model
from ase_phisnet.training.config import TrainConfig
from ase_phisnet.training.evaluate import evaluate_model
from ase_phisnet.training.loop import train

TINY_MODEL = {"channels": [8, 4, 4], "num_layers": 1, "num_radial": 6, "radial_hidden": 8}


def tiny_config(water_file, output_dir, **optim):
    return TrainConfig.from_dict({
        "dataset": str(water_file), "output_dir": str(output_dir), "seed": 3,
        "split": {"n_train": 4, "n_validation": 2, "n_test": 2, "seed": 1},
        "model": TINY_MODEL,
        "optim": {"dtype": "float64", "batch_size": 2, "learning_rate": 5e-3, **optim},
    })


def test_tiny_model_overfits_four_water_geometries(water_file, tmp_path):
    config = TrainConfig.from_dict({
        "dataset": str(water_file), "output_dir": str(tmp_path / "run"), "seed": 3,
        "split": {"n_train": 4, "n_validation": 2, "n_test": 2, "seed": 1},
        "model": {"channels": [16, 8, 8], "num_layers": 2, "num_radial": 8, "radial_hidden": 16},
        "optim": {"dtype": "float64", "batch_size": 4, "learning_rate": 5e-3, "max_epochs": 200,
                  "lr_patience": 1000, "early_stopping_patience": 1000, "ema_decay": 0.0},
    })
    dataset = HamiltonianDataset(water_file)
    train_positions = dataset.split(1, 4, 2, 2).train
    result = train(config, progress=False)
    model = load_model(result.best_model_path).double()
    final_weights = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"]
    model.load_state_dict(final_weights)
    metrics = evaluate_model(model, dataset, train_positions)
    first = result.history[0]["train_hamiltonian"]
    last = result.history[-1]["train_hamiltonian"]
    assert last < first / 100
    # Measured: 4.8 mEh after 200 steps (H elements span ~20 Eh in STO-3G water).
    assert metrics.hamiltonian_mae_ueh < 10_000
    assert metrics.occupied_cosine_similarity_pct > 99.5
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000
    assert "epoch 200" in (tmp_path / "run" / "train.log").read_text()


def test_training_leaves_the_callers_logging_and_random_state_alone(water_file, tmp_path):
    """train() logs to its train.log and seeds torch only for its own duration: afterwards the
    package logger's level, its handlers and torch's random stream are the caller's again."""
    package_logger = logging.getLogger("ase_phisnet")
    handlers, level = list(package_logger.handlers), package_logger.level
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(tiny_config(water_file, tmp_path / "run", max_epochs=2), progress=False)
    assert torch.equal(torch.rand(3), expected)
    assert package_logger.handlers == handlers and package_logger.level == level
    assert package_logger.propagate
    assert "epoch 2" in (tmp_path / "run" / "train.log").read_text()


def test_training_info_goes_to_its_log_file_not_to_the_callers_console(water_file, tmp_path):
    """A caller logging at WARNING (the CLI without --verbose) sees no per-epoch INFO lines on
    its console handler, while train.log has them; a warning reaches both."""
    console = []

    class Collect(logging.Handler):
        def emit(self, record):
            console.append(record)

    root = logging.getLogger()
    collector, root_level = Collect(), root.level
    root.addHandler(collector)
    root.setLevel(logging.WARNING)
    try:
        train(tiny_config(water_file, tmp_path / "run", max_epochs=2), progress=False)
        logging.getLogger("ase_phisnet.training").warning("after training")
    finally:
        root.removeHandler(collector)
        root.setLevel(root_level)
    assert "epoch 2" in (tmp_path / "run" / "train.log").read_text()
    assert not [r for r in console if r.levelno < logging.WARNING]
    assert [r.getMessage() for r in console] == ["after training"]


def test_checkpoint_resumes_exactly(water_file, tmp_path):
    straight = train(tiny_config(water_file, tmp_path / "straight", max_epochs=4), progress=False)
    train(tiny_config(water_file, tmp_path / "resumed", max_epochs=2), progress=False)
    resumed = train(tiny_config(water_file, tmp_path / "resumed", max_epochs=4), progress=False)
    assert resumed.epochs == straight.epochs == 4
    # Resuming restores weights, optimizer, EMA, scheduler and the shuffling RNG; the runs are
    # two code paths (one process vs a reload), so compare to float64 rounding (1e-12), far
    # below what one lost or repeated optimizer step changes (~1e-3 of the weights).
    np.testing.assert_allclose([h["validation_loss"] for h in resumed.history],
                               [h["validation_loss"] for h in straight.history], rtol=1e-10)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-10, atol=1e-12)


def test_training_starts_on_a_file_still_being_generated(water_file, tmp_path, caplog):
    """over_plan split: train on a partial file, resume on the finished one; the finished
    file's validation and test records never enter training, and the best model is chosen
    afresh on the grown validation set."""
    import h5py

    from ase_phisnet.training.evaluate import trained_test_split

    finished = HamiltonianDataset(water_file)
    final_split = finished.split(1, 4, 2, 2, over_plan=True)
    missing = {int(finished.indices[final_split.validation[0]]),
               int(finished.indices[final_split.train[0]])}
    data = tmp_path / "growing.h5"
    data.write_bytes(open(water_file, "rb").read())
    with h5py.File(data, "a") as handle:
        for name in [n for n in handle["records"] if int(n) in missing]:
            del handle["records"][name]

    def config(max_epochs):
        values = tiny_config(data, tmp_path / "run", max_epochs=max_epochs).to_dict()
        values["split"]["over_plan"] = True
        return TrainConfig.from_dict(values)

    first = train(config(2), progress=False)
    first_json = json.load(open(first.best_model_path + ".json"))["training"]
    assert first_json["split"] == {"seed": 1, "n_train": 4, "n_validation": 2, "n_test": 2,
                                   "over_plan": True}
    finished_copy = tmp_path / "finished.h5"  # generation finished (a new file: HDF5 would
    finished_copy.write_bytes(open(water_file, "rb").read())  # reuse a still-open handle)
    finished_copy.replace(data)
    with caplog.at_level("INFO", logger="ase_phisnet.training.loop"):
        second = train(config(4), progress=False)
    assert "validation set changed (1 -> 2 records)" in caplog.text
    assert second.epochs == 4
    model_json = json.load(open(second.best_model_path + ".json"))
    test_positions = trained_test_split(model_json, finished)
    np.testing.assert_array_equal(test_positions, final_split.test)
    assert not set(final_split.train) & (set(final_split.validation) | set(test_positions))


def test_tracegrad_training_step_runs(water_file, tmp_path):
    config = TrainConfig.from_dict({
        "dataset": str(water_file), "output_dir": str(tmp_path / "tg"),
        "split": {"n_train": 4, "n_validation": 2}, "model": {**TINY_MODEL, "tracegrad": True,
                                                            "baseline": "none"},
        "optim": {"max_epochs": 2, "batch_size": 2},
        "loss": {"orbital_energies": 0.1, "tracegrad": 0.1},
    })
    result = train(config, progress=False)
    for term in ("train_tracegrad", "train_orbital_energies"):
        assert all(0 < record[term] < np.inf for record in result.history), term
    assert np.isfinite(result.best_validation_loss)
    # the zero-initialized back-projection of TraceGrad's gradient features learned: its
    # loss reaches the network
    from ase_phisnet.electronic.model_file import load_model

    trained = load_model(result.best_model_path)
    assert float(trained.tracegrad.atom_back.weight.detach().abs().max()) > 0


def test_train_and_evaluate_commands(water_file, tmp_path, capsys):
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({
        "dataset": str(water_file), "output_dir": str(tmp_path / "cli"),
        "split": {"n_train": 4, "n_validation": 2, "n_test": 2},
        "model": TINY_MODEL, "optim": {"max_epochs": 2},
    }))
    assert main(["train", str(config_path), "--no-progress"]) == 0
    model_path = tmp_path / "cli" / "best_model.pt"
    metrics_path = tmp_path / "metrics.json"
    assert main(["evaluate", str(model_path), str(water_file), "--json", str(metrics_path)]) == 0
    out = capsys.readouterr().out
    assert "H MAE" in out and "occupied orbital |cos|" in out
    metrics = json.loads(metrics_path.read_text())
    assert metrics["n_geometries"] == 2 and metrics["hamiltonian_mae_ueh"] > 0


def test_extra_data_joins_training_and_evaluate_finds_its_test_split(water_file, tmp_path,
                                                                     caplog):
    """A second file's training and validation parts join the main file's (its training part
    twice with repeat 2); its own test part is what ``evaluate`` takes on that file, the main
    one on the main file."""
    import shutil

    from ase_phisnet.training.evaluate import trained_test_split

    hot = tmp_path / "water_hot.h5"
    shutil.copy(water_file, hot)
    config = TrainConfig.from_dict({
        **tiny_config(water_file, tmp_path / "run", max_epochs=1).to_dict(),
        "extra_data": [{"dataset": str(hot), "split": {"n_train": 3, "n_validation": 1,
                                                       "n_test": 2, "seed": 5},
                        "repeat": 2}],
    })
    with caplog.at_level("INFO", logger="ase_phisnet"):
        result = train(config, progress=False)
    assert "10 training (repeats counted) and 3 validation geometries from 2 file(s)" \
        in caplog.text
    meta = json.loads(Path(result.best_model_path + ".json").read_text())
    assert meta["training"]["extra_data"][0]["split"] == {
        "seed": 5, "n_train": 3, "n_validation": 1, "n_test": 2}
    hot_dataset, main_dataset = HamiltonianDataset(hot), HamiltonianDataset(water_file)
    np.testing.assert_array_equal(trained_test_split(meta, hot_dataset),
                                  hot_dataset.split(5, 3, 1, 2).test)
    np.testing.assert_array_equal(trained_test_split(meta, main_dataset),
                                  main_dataset.split(1, 4, 2, 2).test)


def test_an_extra_file_may_train_only(water_file, tmp_path, caplog):
    """``n_validation: 0`` for an extra file (a handful of correlated MD frames): its records
    train and nothing of it validates."""
    import shutil

    frames = tmp_path / "frames.h5"
    shutil.copy(water_file, frames)
    config = TrainConfig.from_dict({
        **tiny_config(water_file, tmp_path / "run", max_epochs=1).to_dict(),
        "extra_data": [{"dataset": str(frames),
                        "split": {"n_train": 3, "n_validation": 0, "n_test": 0}}],
    })
    with caplog.at_level("INFO", logger="ase_phisnet"):
        train(config, progress=False)
    assert "7 training (repeats counted) and 2 validation geometries from 2 file(s)" \
        in caplog.text


def test_distributed_data_parallel_matches_one_process(water_file, tmp_path):
    """Two torchrun ranks, each half of every batch, give the weights of one process."""
    import subprocess
    import sys

    def config_file(name):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "dataset": str(water_file), "output_dir": str(tmp_path / name), "seed": 0,
            "split": {"n_train": 4, "n_validation": 2, "n_test": 2},
            "model": TINY_MODEL, "optim": {"max_epochs": 2, "batch_size": 4, "dtype": "float64"},
        }))
        return str(path)

    assert main(["train", config_file("single"), "--no-progress"]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "ase_phisnet.cli", "train", config_file("ddp"), "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    single = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=False)["model"]
    ddp = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=False)["model"]
    for key, value in single.items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("exact_overlap,energy_model", [(False, "phisnet"), (True, "phisnet"),
                                                        (True, "band_structure")])
def test_fine_tuning_an_h_only_model_on_energies_and_forces(small_potential, tmp_path,
                                                            exact_overlap, energy_model):
    """Energy and force losses flow through the eigensolver into the network (with S predicted,
    or taken from the integrals from the fine-tune on; with the band-structure energy model
    the core-H head is dropped)."""
    model_path, data = small_potential("H2O")
    band = energy_model == "band_structure"
    settings = {"exact_overlap": True} if exact_overlap else {}
    loss = {"energy": 1.0, "forces": 1.0}
    if band:  # with the LUMO and LUMO+1 in the orbital-energy term
        settings.update(energy_model=energy_model, matrices=["hamiltonian"])
        loss.update(orbital_energies=1.0, virtual_orbitals=2)
    config = TrainConfig.from_dict({
        "dataset": data, "output_dir": str(tmp_path / "tune"), "init_from": model_path,
        "split": {"n_train": 12, "n_validation": 4, "n_test": 0},
        "model": settings,
        "optim": {"dtype": "float64", "batch_size": 4, "learning_rate": 1e-3, "max_epochs": 3},
        "loss": loss,
    })
    result = train(config, progress=False)
    first, last = result.history[0], result.history[-1]
    assert np.isfinite(last["train_energy"]) and np.isfinite(last["train_forces"])
    assert last["train_forces"] < first["train_forces"]
    assert ("train_overlap" in last) != exact_overlap
    before, after = load_model(model_path), load_model(result.best_model_path)
    assert after.config.exact_overlap == exact_overlap
    assert after.config.energy_model == energy_model
    assert ("train_core_hamiltonian" in last) != band and ("core_hamiltonian" in after.heads) != band
    assert ("train_orbital_energies" in last) == band
    if band:  # a new energy model starts from zeroed element energies, refitted before training
        assert bool(after.remainder.element_energy_eh.any())
    after_state = after.state_dict()
    changed = [not torch.allclose(value, after_state[key], rtol=0, atol=1e-9)
               for key, value in before.state_dict().items() if key in after_state]
    assert any(changed)
    # The matrix heads' on-site offsets of the pretrained model are kept, not refitted: a
    # buffer copied from the file (no arithmetic on it), so exact.
    torch.testing.assert_close(after.heads["hamiltonian"].onsite_offset,
                               before.heads["hamiltonian"].onsite_offset, rtol=0, atol=0)


def test_dipole_loss_trains_the_density(water_file, tmp_path):
    """Training on the dipole term alone lowers it: S comes from the integrals and H is the
    only predicted matrix, so only the dipole gradient moves H. The evaluation reports the
    dipole MAE of the predicted density."""
    values = tiny_config(water_file, tmp_path / "run", max_epochs=15).to_dict()
    values["model"] = {**TINY_MODEL, "matrices": ["hamiltonian"], "exact_overlap": True,
                       "exact_core_hamiltonian": False, "baseline": "none"}
    values["loss"] = {"hamiltonian": 0.0, "tracegrad": 0.0, "dipole": 1.0}
    result = train(TrainConfig.from_dict(values), progress=False)
    assert result.history[-1]["train_dipole"] < 0.5 * result.history[0]["train_dipole"]
    dataset = HamiltonianDataset(water_file)
    metrics = evaluate_model(load_model(result.best_model_path).double(), dataset,
                             dataset.split(1, 4, 2, 2).test)
    assert np.isfinite(metrics.dipole_mae_debye) and metrics.dipole_mae_debye > 0
    assert "dipole MAE" in metrics.table()

    values["model"] = {**TINY_MODEL, "matrices": ["hamiltonian"],  # no S at all
                       "exact_overlap": False, "exact_core_hamiltonian": False, "baseline": "none"}
    values["output_dir"] = str(tmp_path / "no_overlap")
    with pytest.raises(ValueError, match=r"need a model that predicts H and S"):
        train(TrainConfig.from_dict(values), progress=False)


def test_core_baseline_model_trains_on_the_residual(water_file, tmp_path):
    """``model.baseline: core``: the H head's on-site offsets are fitted to the on-site blocks
    of ``H - H_core`` (what the head predicts), and a few epochs lower the H loss."""
    import dataclasses

    from ase_phisnet.electronic.model import ModelConfig, PhiSNetModel
    from ase_phisnet.training.data import load_matrix_data, with_exact_matrices
    from ase_phisnet.training.loop import fit_onsite_offsets

    data = load_matrix_data(HamiltonianDataset(water_file), range(4), ["hamiltonian"])
    settings = {"basis": "sto-3g", "elements": ("H", "O"), "channels": (8, 4, 4)}
    based = PhiSNetModel(ModelConfig(**settings, baseline="core")).double()
    plain = PhiSNetModel(ModelConfig(**settings, baseline="none")).double()
    fit_onsite_offsets(based, with_exact_matrices(data, based))
    residual = data.matrices["hamiltonian"] - based.exact_matrices(
        data.atomic_numbers, data.positions_bohr)["core_hamiltonian"]
    fit_onsite_offsets(plain, dataclasses.replace(
        data, matrices={**data.matrices, "hamiltonian": residual}))
    # the same fit on the same residual blocks, computed the other way round
    torch.testing.assert_close(based.heads["hamiltonian"].onsite_offset,
                               plain.heads["hamiltonian"].onsite_offset, rtol=1e-12, atol=1e-12)

    config = TrainConfig.from_dict({
        **tiny_config(water_file, tmp_path / "run", max_epochs=6).to_dict(),
        "model": {**TINY_MODEL, "baseline": "core"},
    })
    result = train(config, progress=False)
    assert result.history[-1]["train_hamiltonian"] < result.history[0]["train_hamiltonian"]
    assert load_model(result.best_model_path).config.baseline == "core"
