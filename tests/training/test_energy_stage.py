"""Energy training with frozen matrices: the cached electronic terms give exactly the composed
model's forces, the remainder learns while the matrices stay unchanged, runs resume, and the
result is one model file whose calculator forces are -dE/dR."""

import dataclasses
import math
import shutil

import pytest
import torch

from ase_phisnet.core.errors import PhiSNetError
from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.electronic.model import energy_and_forces
from ase_phisnet.electronic.model_file import load_model
from ase_phisnet.training.config import TrainConfig
from ase_phisnet.training import energy_stage
from ase_phisnet.training.energy_stage import (
    _cache_all,
    _model_for_energy,
    cache_electronic,
    predicted_energy_forces,
)
from ase_phisnet.training.loop import CHECKPOINT, train

REMAINDER = {"remainder": "message_passing", "energy_model": "band_structure",
             "remainder_channels": 8, "remainder_layers": 2, "remainder_radial": 6}


def energy_config(data, output_dir, init_from, **model):
    return TrainConfig.from_dict({
        "dataset": str(data), "output_dir": str(output_dir), "seed": 0, "init_from": init_from,
        "split": {"n_train": 12, "n_validation": 4, "n_test": 0},
        "model": {**REMAINDER, **model}, "loss": {"energy": 1.0, "forces": 1.0},
        "optim": {"dtype": "float64", "batch_size": 4, "learning_rate": 3e-3,
                  "max_epochs": 25, "ema_decay": 0.5}})


@pytest.fixture(scope="module")
def trained(small_potential, tmp_path_factory):
    matrices, data = small_potential("H2O")
    folder = tmp_path_factory.mktemp("energy_stage")
    result = train(energy_config(data, folder / "run", matrices), progress=False)
    return matrices, data, folder, result


@pytest.mark.parametrize("energy_model", ["band_structure", "none"])
def test_cached_forces_are_the_composed_models_forces(small_potential, energy_model):
    """F = F_0 - dE_rem/dR - dE_rem/dx . dx/dR from the cache against autograd through the
    whole model (network, eigensolver, features, remainder): two code paths, float64, agree
    to rounding (measured ~1e-13 Eh/Bohr; forces ~0.1-1 Eh/Bohr)."""
    matrices, data = small_potential("H2O")
    dataset = HamiltonianDataset(data)
    config = energy_config(data, "unused", matrices, energy_model=energy_model)
    model = _model_for_energy(config, dataset)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.remainder.painn.parameters():
            parameter.normal_(std=0.3)
    records = [dataset[i] for i in range(3)]
    z = torch.as_tensor(records[0].atomic_numbers)
    positions = torch.stack([torch.as_tensor(r.positions_bohr) for r in records])
    cached = cache_electronic(model, z, positions)
    assert cached.jacobian.shape == (3, 3, 6, 3, 3)
    energy, forces = predicted_energy_forces(model, z, positions, cached, create_graph=False)
    prediction, reference_forces = energy_and_forces(model, z, positions)
    torch.testing.assert_close(energy, prediction.energy_eh, rtol=0, atol=1e-10)
    assert float(forces.abs().max()) > 1e-2  # the remainder and the features take part
    torch.testing.assert_close(forces, reference_forces, rtol=0, atol=1e-9)


def test_an_oversampled_part_is_cached_once(small_potential, monkeypatch):
    """extra_data[].repeat enters a part several times as the same object: its electronic terms
    are computed once and repeated, in the order of the parts, also where another list (the
    validation parts) holds it."""
    matrices, data = small_potential("H2O")
    dataset = HamiltonianDataset(data)
    config = energy_config(data, "unused", matrices)
    model = _model_for_energy(config, dataset)
    records = [dataset[i] for i in range(3)]
    z = torch.as_tensor(records[0].atomic_numbers)
    positions = torch.stack([torch.as_tensor(r.positions_bohr) for r in records])
    once, twice = (z, positions[:1]), (z, positions[1:])
    calls = []

    def counted(model, atomic_numbers, positions_bohr, *, charge=0, progress=False):
        calls.append(len(positions_bohr))
        return cache_electronic(model, atomic_numbers, positions_bohr, charge=charge,
                                progress=progress)

    monkeypatch.setattr(energy_stage, "cache_electronic", counted)
    cached = _cache_all(model, config, z, {"train": [once, twice, twice],
                                           "validation": [twice]}, charge=0, progress=False)
    assert calls == [3]
    for name, rows in (("train", [0, 1, 2, 1, 2]), ("validation", [1, 2])):
        expected = cache_electronic(model, z, positions[rows])
        torch.testing.assert_close(cached[name].energy_eh, expected.energy_eh, rtol=0,
                                   atol=1e-12)
        torch.testing.assert_close(cached[name].jacobian, expected.jacobian, rtol=0,
                                   atol=1e-10)


def test_cache_workers_compute_the_same_cache_in_processes(small_potential, tmp_path):
    """optim.cache_workers: 2 spreads the geometries over two spawned processes, each rebuilding
    the frozen model from the config; their cache is the one process's (float64, the same
    operations on the same inputs, compared to rounding)."""
    matrices, data = small_potential("H2O")
    values = energy_config(data, tmp_path / "run", matrices).to_dict()
    values["optim"]["cache_workers"] = 2
    config = TrainConfig.from_dict(values)
    dataset = HamiltonianDataset(data)
    model = _model_for_energy(config, dataset)
    records = [dataset[i] for i in range(5)]
    z = torch.as_tensor(records[0].atomic_numbers)
    positions = torch.stack([torch.as_tensor(r.positions_bohr) for r in records])
    parts = {"train": [(z, positions[:3])], "validation": [(z, positions[3:])]}
    cached = _cache_all(model, config, z, parts, charge=0, progress=False)
    for name, rows in (("train", slice(0, 3)), ("validation", slice(3, 5))):
        expected = cache_electronic(model, z, positions[rows])
        for got, want in zip(dataclasses.astuple(cached[name]), dataclasses.astuple(expected)):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_selection_on_the_main_validation_split(small_potential, tmp_path):
    """optim.select_on: main computes the validation loss on the main file's validation
    records only, with extra data beside them: the same first epoch (same seed) scores
    differently than on all records, and the main-only MAEs are recorded either way."""
    matrices, data = small_potential("H2O")
    losses = {}
    for select_on in ("all", "main"):
        values = energy_config(data, tmp_path / select_on, matrices).to_dict()
        values["split"] = {"n_train": 8, "n_validation": 3, "n_test": 0, "seed": 0}
        values["extra_data"] = [{"dataset": str(data), "split": {
            "n_train": 4, "n_validation": 6, "n_test": 0, "seed": 5}}]
        values["optim"].update(max_epochs=1, select_on=select_on)
        result = train(TrainConfig.from_dict(values), progress=False)
        first = result.history[0]
        assert first["validation_main_forces_mae_meV_per_A"] > 0
        losses[select_on] = first["validation_loss"]
    assert abs(losses["main"] - losses["all"]) > 1e-6 * losses["all"]


def test_matrix_training_selects_on_the_main_validation_split(small_potential, tmp_path):
    """Matrix training with optim.select_on: main scores each epoch on the main file's
    validation records alone: with an extra file beside it, the same first epoch (same seed,
    same training records) scores differently than on every file's validation records."""
    _, data = small_potential("H2O")
    losses = {}
    for select_on in ("all", "main"):
        values = energy_config(data, tmp_path / select_on, None).to_dict()
        values["model"], values["loss"] = {}, {"hamiltonian": 1.0}
        values["split"] = {"n_train": 8, "n_validation": 3, "n_test": 0, "seed": 0}
        values["extra_data"] = [{"dataset": str(data), "split": {
            "n_train": 4, "n_validation": 6, "n_test": 0, "seed": 5}}]
        values["optim"].update(max_epochs=1, select_on=select_on)
        result = train(TrainConfig.from_dict(values), progress=False)
        losses[select_on] = result.history[0]["validation_loss"]
    assert math.isfinite(losses["main"])
    assert abs(losses["main"] - losses["all"]) > 1e-6 * losses["all"]


def test_feature_noise_changes_training_and_is_refused_in_matrix_training(small_potential,
                                                                          tmp_path):
    """optim.feature_noise perturbs the features the remainder trains on: the same seed's
    first epoch ends elsewhere than without noise, and its records are finite. Matrix
    training, which has no cached features, refuses the option."""
    matrices, data = small_potential("H2O")
    losses = {}
    for noise in (0.0, 0.5):
        values = energy_config(data, tmp_path / f"noise{noise}", matrices).to_dict()
        values["model"]["electronic_features"] = True
        values["optim"].update(max_epochs=1, feature_noise=noise)
        result = train(TrainConfig.from_dict(values), progress=False)
        losses[noise] = result.history[0]["train_forces"]
    assert all(math.isfinite(loss) for loss in losses.values())
    assert abs(losses[0.5] - losses[0.0]) > 1e-6 * losses[0.0]
    values = energy_config(data, tmp_path / "matrices", None).to_dict()
    values["model"], values["loss"] = {}, {"hamiltonian": 1.0}
    values["optim"]["feature_noise"] = 0.5
    with pytest.raises(ValueError, match="feature_noise is implemented for the energy stage"):
        train(TrainConfig.from_dict(values), progress=False)


def test_the_trained_remainder_bounds_its_features_around_the_training_ones(trained):
    """Energy training sets finite feature bounds, saved with the weights, that hold every
    training geometry's features inside the range the network takes unchanged."""
    _, data, folder, result = trained
    model = load_model(result.best_model_path).double()
    stored = torch.load(folder / "run" / energy_stage.CACHE, weights_only=True)
    features = energy_stage.CachedElectronic(*stored["train"]).features
    remainder = model.remainder
    assert bool(torch.isfinite(remainder.feature_lower).all()
                and torch.isfinite(remainder.feature_upper).all())
    species = model.species(torch.as_tensor(HamiltonianDataset(data)[0].atomic_numbers))
    assert float(remainder.feature_excursions(species, features).max()) == 0.0


def test_remainder_learns_with_the_matrices_frozen(trained):
    matrices, _, folder, result = trained
    history = result.history
    assert history[-1]["validation_loss"] < 0.5 * history[0]["validation_loss"]
    model = load_model(result.best_model_path)
    frozen = load_model(matrices)
    for name, value in frozen.state_dict().items():
        if name.startswith("network."):
            assert torch.equal(model.state_dict()[name], value.to(model.state_dict()[name].dtype))
    assert model.config.remainder == "message_passing"
    assert (folder / "run" / "electronic_cache.pt").exists()


def test_resumed_run_continues_from_its_checkpoint(trained):
    matrices, data, folder, result = trained
    longer = energy_config(data, folder / "run", matrices)
    longer = TrainConfig.from_dict({**longer.to_dict(), "optim": {
        **longer.to_dict()["optim"], "max_epochs": 28}})
    resumed = train(longer, progress=False)
    assert resumed.epochs == 28 and resumed.history[:25] == result.history


def test_resuming_with_other_model_settings_is_refused(trained):
    """Same weight shapes, another function: a checkpoint resumes only into the model it was
    written for, and the error names the setting."""
    matrices, data, folder, _ = trained
    changed = energy_config(data, folder / "run", matrices, remainder_norm_eps=1e-4)
    with pytest.raises(PhiSNetError, match="remainder_norm_eps: 0.01 there, 0.0001 now"):
        train(changed, progress=False)


def test_a_setting_the_checkpoint_predates_takes_its_value_of_that_time(trained, tmp_path):
    """A setting added after a checkpoint was written is read with the value of its time
    (``UNRECORDED_FIELDS``), not today's default: a run from before the soft norm had
    ``remainder_norm_eps`` 1e-8 and does not resume into a model with today's 1e-2."""
    matrices, data, folder, _ = trained
    run = tmp_path / "run"
    shutil.copytree(folder / "run", run)
    checkpoint = torch.load(run / CHECKPOINT, weights_only=False)
    del checkpoint["model_config"]["remainder_norm_eps"]
    torch.save(checkpoint, run / CHECKPOINT)
    with pytest.raises(PhiSNetError, match="remainder_norm_eps: 1e-08 there, 0.01 now"):
        train(energy_config(data, run, matrices), progress=False)


def test_plain_mlip_needs_no_matrices_and_features_need_them(small_potential, tmp_path):
    _, data = small_potential("H2O")
    plain = train(energy_config(data, tmp_path / "plain", None, energy_model="none",
                                electronic_features=False), progress=False)
    assert plain.history[-1]["validation_loss"] < plain.history[0]["validation_loss"]
    with pytest.raises(ValueError, match="need trained matrices: set init_from"):
        train(energy_config(data, tmp_path / "features", None, energy_model="none"),
              progress=False)


def test_end_to_end_training_of_a_message_passing_model_is_refused(trained, tmp_path):
    """Its energy lives after the eigensolver, where the end-to-end loss does not look."""
    _, data, _, result = trained
    config = TrainConfig.from_dict({
        "dataset": str(data), "output_dir": str(tmp_path / "run"),
        "init_from": result.best_model_path, "split": {"n_train": 12, "n_validation": 4},
        "loss": {"energy": 1.0}, "optim": {"dtype": "float64", "max_epochs": 1}})
    with pytest.raises(ValueError, match="put remainder: message_passing under model"):
        train(config, progress=False)


def test_a_cache_made_for_other_settings_is_recomputed(trained, tmp_path):
    """The cache holds the frozen part's energies and forces, the pair prior included: a new
    run in the folder with another prior recomputes it instead of training against the old
    one. With the cutoff at 1.5x the covalent radii sum every O-H of thermal water is inside
    the (positive) prior, so each cached energy rises."""
    matrices, data, folder, _ = trained
    run = tmp_path / "run"
    shutil.copytree(folder / "run", run)
    (run / CHECKPOINT).unlink()  # a new run, not a resume
    before = torch.load(run / energy_stage.CACHE, weights_only=True)
    values = energy_config(data, run, matrices, pair_repulsion="zbl",
                           pair_repulsion_cutoff_scale=1.5).to_dict()
    train(TrainConfig.from_dict({**values, "optim": {**values["optim"], "max_epochs": 1}}),
          progress=False)
    after = torch.load(run / energy_stage.CACHE, weights_only=True)
    assert after["settings"]["pair_repulsion_cutoff_scale"] == 1.5
    rise = (energy_stage.CachedElectronic(*after["train"]).energy_eh
            - energy_stage.CachedElectronic(*before["train"]).energy_eh)
    assert bool((rise > 1e-4).all())  # Eh


def test_the_prior_comes_from_the_energy_config_not_the_matrices_file(small_potential, tmp_path):
    """The remainder and its prior are new in the energy stage: a matrices file that carries a
    ZBL prior at the old full-radii cutoff hands on its matrices, not its prior."""
    from ase_phisnet.electronic.model import reconfigured
    from ase_phisnet.electronic.model_file import save_model

    matrices, data = small_potential("H2O")
    with_prior = tmp_path / "matrices_with_prior.pt"
    save_model(reconfigured(load_model(matrices), pair_repulsion="zbl",
                            pair_repulsion_cutoff_scale=1.0), with_prior)
    dataset = HamiltonianDataset(data)
    plain = _model_for_energy(energy_config(data, "unused", str(with_prior)), dataset)
    assert plain.config.pair_repulsion == "none"
    zbl = _model_for_energy(energy_config(data, "unused", str(with_prior), pair_repulsion="zbl"),
                            dataset)
    assert (zbl.config.pair_repulsion, zbl.config.pair_repulsion_cutoff_scale) == ("zbl", 0.75)


def test_a_cache_of_other_geometries_of_the_same_size_is_recomputed(trained, tmp_path):
    """The cache is keyed by the geometries themselves: another split seed (same sizes, same
    files) must not train the remainder against the frozen terms of other geometries."""
    matrices, data, folder, _ = trained
    run = tmp_path / "run"
    shutil.copytree(folder / "run", run)
    (run / CHECKPOINT).unlink()
    before = torch.load(run / energy_stage.CACHE, weights_only=True)
    values = energy_config(data, run, matrices).to_dict()
    values["split"]["seed"] = 7
    values["optim"]["max_epochs"] = 1
    train(TrainConfig.from_dict(values), progress=False)
    after = torch.load(run / energy_stage.CACHE, weights_only=True)
    assert after["settings"]["sizes"] == before["settings"]["sizes"]
    assert after["settings"]["positions_sha256"] != before["settings"]["positions_sha256"]
    dataset = HamiltonianDataset(data)
    split = energy_stage.split_of(dataset, TrainConfig.from_dict(values).split)
    model = _model_for_energy(TrainConfig.from_dict(values), dataset)
    first = dataset[int(split.train[0])]
    expected = cache_electronic(model, torch.as_tensor(first.atomic_numbers),
                                torch.as_tensor(first.positions_bohr)[None])
    torch.testing.assert_close(energy_stage.CachedElectronic(*after["train"]).energy_eh[:1],
                               expected.energy_eh, rtol=0, atol=1e-10)


@pytest.mark.parametrize("setting", [{"cutoff_bohr": 6.0}, {"baseline": "core"},
                                     {"sap_basis": "sapgraspsmall"}])
def test_the_energy_stage_refuses_to_change_the_frozen_matrices(small_potential, setting):
    """``model:`` of an energy stage sets the remainder; a network or baseline setting there
    would give the frozen weights another H (loaded as if nothing changed)."""
    matrices, data = small_potential("H2O")
    dataset = HamiltonianDataset(data)
    name = next(iter(setting))
    with pytest.raises(ValueError, match=f"model.{name} would change the frozen matrices"):
        _model_for_energy(energy_config(data, "unused", matrices, **setting), dataset)


def test_the_energy_stage_refuses_another_device(small_potential, tmp_path):
    matrices, data = small_potential("H2O")
    values = energy_config(data, tmp_path / "run", matrices).to_dict()
    values["optim"]["device"] = "cuda"
    with pytest.raises(ValueError, match="the energy stage trains on the CPU"):
        train(TrainConfig.from_dict(values), progress=False)
