"""Evaluation metrics: the energy and force errors equal those computed from the calculator."""

import numpy as np
import pytest
from ase import Atoms
from ase.units import Bohr, Hartree

from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.electronic.model_file import load_model
from ase_phisnet.interface.calculator import PhiSNetCalculator
from ase_phisnet.training.evaluate import evaluate_model


def test_evaluate_energy_and_force_metrics(small_potential):
    """The energy/force metrics equal errors computed directly from the calculator."""
    model_path, data_path = small_potential("H2O")
    model = load_model(model_path).double()
    dataset = HamiltonianDataset(data_path)
    metrics = evaluate_model(model, dataset, range(12, 16), batch_size=3)
    calc = PhiSNetCalculator(model_path)
    energy_errors, force_errors = [], []
    for index in range(12, 16):
        record = dataset[index]
        atoms = Atoms(numbers=record.atomic_numbers, positions=record.positions_bohr * Bohr)
        atoms.calc = calc
        energy_errors.append(atoms.get_potential_energy() - record.energy_eh * Hartree)
        force_errors.append(atoms.get_forces() - record.forces_eh_per_bohr * Hartree / Bohr)
    force_errors = np.array(force_errors)
    assert metrics.energy_mae_mev == pytest.approx(1000 * np.mean(np.abs(energy_errors)), rel=1e-8)
    assert metrics.force_mae_mev_per_ang == pytest.approx(1000 * np.abs(force_errors).mean(),
                                                          rel=1e-8)
    assert metrics.force_max_error_mev_per_ang == pytest.approx(
        1000 * np.linalg.norm(force_errors, axis=-1).max(), rel=1e-8)
    assert metrics.energy_mae_kcal_mol == pytest.approx(metrics.energy_mae_mev / 43.364, rel=1e-3)
