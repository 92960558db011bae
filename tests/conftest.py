"""Shared fixtures: small reference datasets and small trained models, made once per session."""

import pytest
from model_settings import PREDICTED_MATRICES

from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.data.generate import generate_dataset
from ase_phisnet.data.reference import Theory
from ase_phisnet.data.sampling import SamplerConfig
from ase_phisnet.electronic.model_file import load_model, save_model
from ase_phisnet.training.config import TrainConfig
from ase_phisnet.training.data import load_matrix_data
from ase_phisnet.training.loop import fit_element_energies, train

STO3G_HF = Theory(xc="hf", basis="sto-3g")
# The kind of the shipped potentials: S and core H predicted by the network, no baseline
SMALL_MODEL = {"channels": [16, 8, 8], "num_layers": 2, "num_radial": 8, "radial_hidden": 16,
               "energy_hidden": 16, **PREDICTED_MATRICES}


@pytest.fixture(scope="session")
def water_file(tmp_path_factory):
    """Ten RHF/STO-3G water records (normal-mode sampling at 500 K, seed 0)."""
    out = tmp_path_factory.mktemp("water") / "water.h5"
    sampler = SamplerConfig(kind="normal-modes", temperatures_k=(500.0,), seed=0)
    generate_dataset("H2O", 10, STO3G_HF, sampler, out, progress=False)
    return out


@pytest.fixture(scope="session")
def small_potential(tmp_path_factory):
    """``small_potential(name)`` -> (model path, dataset path) of a small model of ``name``
    (RHF/STO-3G, 16 normal-mode geometries at 500 K): H, S and core H trained for 60 epochs,
    element energies fitted to the reference energies. Smooth and cheap, not accurate (its
    forces were never trained): for derivative, symmetry and contract tests. Its metadata
    keeps the training record and the training geometries' domain. Cached."""
    cache = {}

    def make(name: str):
        key = name
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"potential_{name}")
            data = folder / "data.h5"
            sampler = SamplerConfig(kind="normal-modes", temperatures_k=(500.0,), seed=0)
            generate_dataset(name, 16, STO3G_HF, sampler, data, progress=False)
            result = train(TrainConfig.from_dict({
                "dataset": str(data), "output_dir": str(folder / "run"), "seed": 0,
                "split": {"n_train": 12, "n_validation": 4, "n_test": 0},
                "model": SMALL_MODEL,
                "optim": {"dtype": "float64", "batch_size": 4, "learning_rate": 5e-3,
                          "max_epochs": 60, "ema_decay": 0.9},
            }), progress=False)
            model = load_model(result.best_model_path).double()
            dataset = HamiltonianDataset(data)
            fit_element_energies(model, load_matrix_data(dataset, range(12), model.config.matrices))
            path = folder / "potential.pt"
            with open(result.best_model_path + ".json") as handle:
                import json

                trained = json.load(handle)
            save_model(model, path, extra={name: trained[name] for name in ("training", "domain")})
            cache[key] = (str(path), str(data))
        return cache[key]

    return make
