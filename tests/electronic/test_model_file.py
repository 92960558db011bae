"""Model files: weights beside JSON metadata round-trip, version-1 and version-2 files are
mapped onto version 3, and corrupt, foreign, future or mismatched files raise ModelFileError naming the
problem."""

import dataclasses
import json

import pytest
import torch
from ase.build import molecule
from ase.units import Bohr
from model_settings import PREDICTED_MATRICES

from ase_phisnet.core.domain import TrainingDomain
from ase_phisnet.core.errors import ModelFileError
from ase_phisnet.electronic.model import ModelConfig, PhiSNetModel
from ase_phisnet.electronic.model_file import (
    MODEL_FORMAT,
    UNRECORDED_FIELDS,
    load_model,
    load_model_file,
    read_metadata,
    recorded_config,
    save_model,
    training_domain,
)

SMALL = {"channels": (8, 4, 4, 2, 2), "num_layers": 1, "num_radial": 6, "radial_hidden": 8}


def make_model(tracegrad=False, dtype=torch.float64):
    torch.manual_seed(0)
    # TraceGrad's block-norm targets are of the full H: no baseline under it
    baseline = {"baseline": "none"} if tracegrad else {}
    model = PhiSNetModel(ModelConfig(basis="def2-svp", elements=("H", "O"), tracegrad=tracegrad,
                                     **SMALL, **baseline)).to(dtype)
    with torch.no_grad():  # non-default values, so that a lost tensor shows
        model.remainder.element_energy_eh.copy_(torch.tensor([-0.5, -75.0]))
        model.heads["hamiltonian"].onsite_offset.normal_()
    return model


def outputs(model):
    atoms = molecule("H2O")
    z = torch.tensor(atoms.numbers)
    return model(z, torch.tensor(atoms.positions / Bohr, dtype=next(model.parameters()).dtype))


def assert_same_state(loaded, model):
    """Loading copies tensors: exact."""
    state = loaded.state_dict()
    assert state.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_round_trip_keeps_config_weights_dtype_and_metadata(tmp_path, dtype):
    model = make_model(tracegrad=True, dtype=dtype)
    path = tmp_path / "model.pt"
    domain = TrainingDomain(("H2O",), {"H-H": (1.4, 1.7), "H-O": (0.9, 1.1)})
    save_model(model, path, extra={"training": {"seed": 3}, "domain": domain.to_dict()})
    loaded, meta = load_model_file(path)
    assert loaded.config == model.config
    assert_same_state(loaded, model)
    assert meta["format"] == MODEL_FORMAT and meta["format_version"] == 3
    assert meta["training"] == {"seed": 3} and training_domain(meta) == domain
    assert training_domain({"format": MODEL_FORMAT}) is None
    for key, value in outputs(model).items():
        # same weights in another module instance: equal up to summation order
        torch.testing.assert_close(outputs(loaded)[key], value, rtol=1e-6, atol=1e-12)
    assert not list(tmp_path.glob("*.pkl")) and json.loads((tmp_path / "model.pt.json")
                                                          .read_text())["config"]


def test_version_1_files_are_mapped_onto_version_2(tmp_path):
    """Version 1: one flat module, the remainder as ``energy_mlp.`` and ``element_energy_eh``."""
    model = make_model()
    flat = {}
    for key, value in model.state_dict().items():
        if key.startswith("network."):
            flat[key[len("network."):]] = value
        elif key.startswith("remainder.mlp."):
            flat["energy_mlp." + key[len("remainder.mlp."):]] = value
        else:
            assert key == "remainder.element_energy_eh"
            flat["element_energy_eh"] = value
    path = tmp_path / "old.pt"
    torch.save({"format": MODEL_FORMAT, "format_version": 1, "state_dict": flat}, path)
    (tmp_path / "old.pt.json").write_text(json.dumps(
        {"format": MODEL_FORMAT, "format_version": 1, "config": model.config.to_dict()}))
    assert_same_state(load_model(path), model)


def test_version_2_files_have_unbounded_electronic_features(tmp_path):
    """Version 2 stored no feature bounds: its files load with infinite ones, so the remainder
    takes every feature unchanged, as it did when they were written."""
    model = PhiSNetModel(ModelConfig(basis="def2-svp", elements=("H", "O"), **SMALL,
                                     remainder="message_passing", energy_model="none")).double()
    state = {key: value for key, value in model.state_dict().items()
             if key not in ("remainder.feature_lower", "remainder.feature_upper")}
    path = tmp_path / "v2.pt"
    torch.save({"format": MODEL_FORMAT, "format_version": 2, "state_dict": state}, path)
    (tmp_path / "v2.pt.json").write_text(json.dumps(
        {"format": MODEL_FORMAT, "format_version": 2, "config": model.config.to_dict()}))
    remainder = load_model(path).remainder
    assert bool((remainder.feature_lower == -float("inf")).all())
    assert bool((remainder.feature_upper == float("inf")).all())


def test_fields_a_file_does_not_record_take_their_values_of_that_time(tmp_path):
    """A file written before a config field existed meant that field's value of the time (S and
    H_core predicted, no baseline), not today's default: the shipped potentials are such
    files."""
    path = tmp_path / "model.pt"
    model = PhiSNetModel(ModelConfig(basis="def2-svp", elements=("H", "O"), **SMALL,
                                     **PREDICTED_MATRICES))
    save_model(model, path)
    meta = json.loads((tmp_path / "model.pt.json").read_text())
    for name in UNRECORDED_FIELDS:
        del meta["config"][name]
    (tmp_path / "model.pt.json").write_text(json.dumps(meta))
    loaded = load_model(path)
    # the PaiNN's soft-norm eps was 1e-8 before the field existed (today 1e-2), and V_SAP's
    # charges PySCF's large fit (today the compact one)
    assert loaded.config == dataclasses.replace(model.config, remainder_norm_eps=1e-8,
                                                sap_basis="sapgrasplarge")
    # the ZBL prior ended at the full covalent radii sum (today 0.75 of it); without the prior
    # the scale changes nothing and reads as today's
    assert recorded_config({"pair_repulsion": "zbl"}).pair_repulsion_cutoff_scale == 1.0
    assert recorded_config({}).pair_repulsion_cutoff_scale == 0.75
    assert set(loaded.heads) == {"hamiltonian", "overlap", "core_hamiltonian"}
    assert ModelConfig().baseline == "core_sap"  # what the fields mean today
    assert ModelConfig().remainder_norm_eps == 1e-2
    assert ModelConfig().pair_repulsion_cutoff_scale == 0.75


def test_a_message_passing_file_without_norm_eps_builds_its_painn_with_1e_8(tmp_path):
    path = tmp_path / "model.pt"
    model = PhiSNetModel(ModelConfig(basis="def2-svp", elements=("H", "O"), **SMALL,
                                     remainder="message_passing", energy_model="none"))
    save_model(model, path)
    meta = json.loads((tmp_path / "model.pt.json").read_text())
    del meta["config"]["remainder_norm_eps"]
    (tmp_path / "model.pt.json").write_text(json.dumps(meta))
    interactions = load_model(path).remainder.painn.interactions
    assert [layer.norm_eps for layer in interactions] == [1e-8] * len(interactions)


@pytest.fixture()
def saved(tmp_path):
    path = tmp_path / "model.pt"
    save_model(make_model(), path)
    meta = json.loads((tmp_path / "model.pt.json").read_text())
    return path, meta, tmp_path / "model.pt.json"


def test_missing_files_are_clear_errors(tmp_path, saved):
    path, _, json_path = saved
    with pytest.raises(ModelFileError, match="nothing.pt: no such model file"):
        load_model(tmp_path / "nothing.pt")
    json_path.rename(tmp_path / "elsewhere.json")  # weights without metadata
    with pytest.raises(ModelFileError, match="missing config file .*model.pt.json"):
        load_model(path)
    (tmp_path / "elsewhere.json").rename(json_path)
    path.unlink()  # metadata without weights
    with pytest.raises(ModelFileError, match="model.pt: no such model file"):
        load_model(path)


@pytest.mark.parametrize("text,message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", r"not an ase-phisnet model \(format 'list'\)"),
    (json.dumps({"format": "other"}), r"not an ase-phisnet model \(format 'other'\)"),
    (json.dumps({"format": MODEL_FORMAT, "format_version": 99}),
     r"model format version 99; this ase_phisnet reads versions \(1, 2, 3\)"),
])
def test_corrupt_foreign_and_future_metadata_are_clear_errors(saved, text, message):
    path, _, meta_path = saved
    meta_path.write_text(text)
    with pytest.raises(ModelFileError, match=message):
        read_metadata(path)
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def test_invalid_config_domain_and_weights_are_clear_errors(saved):
    path, meta, meta_path = saved
    meta_path.write_text(json.dumps({**meta, "config": {**meta["config"], "chanels": [8]}}))
    with pytest.raises(ModelFileError, match="invalid model config"):
        load_model(path)
    meta_path.write_text(json.dumps({**meta, "domain": {"compositions": ["H2O"]}}))
    with pytest.raises(ModelFileError, match="invalid training domain"):
        load_model(path)
    other = {**meta["config"], "channels": [8, 4, 4, 4, 4]}  # weights of another shape
    meta_path.write_text(json.dumps({**meta, "config": other}))
    with pytest.raises(ModelFileError, match="weights do not match the config"):
        load_model(path)
    meta_path.write_text(json.dumps(meta))
    path.write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="unreadable or corrupt weights"):
        load_model(path)


def test_a_pickled_module_is_refused(saved):
    """weights_only loading: a file holding a pickled module is not executed."""
    path, _, _ = saved
    torch.save({"format": MODEL_FORMAT, "format_version": 2, "state_dict": make_model()}, path)
    with pytest.raises(ModelFileError, match="unreadable or corrupt weights"):
        load_model(path)
