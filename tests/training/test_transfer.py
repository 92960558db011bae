"""Fine-tuning the energy path on high-level (CCSD) energies and forces."""

import numpy as np
import torch

from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.data.highlevel import coupled_cluster
from ase_phisnet.electronic.model_file import load_model
from ase_phisnet.training.transfer import (
    ENERGY_PATH_PARAMETERS,
    FineTuneConfig,
    fine_tune_energy_path,
    predict_energies_forces,
)

WATER_Z = np.array([8, 1, 1])


def test_fine_tuning_changes_only_the_energy_path_and_learns_a_smooth_correction(
        small_potential):
    """Targets: the model's own PES plus a real, smooth level-of-theory difference (the CCSD
    correlation energy and its forces on the same geometries, ~-50 mEh). Fine-tuning must learn
    it through the energy path alone; H, S and core H are untouched."""
    model_path, data_path = small_potential("H2O")
    dataset = HamiltonianDataset(data_path)
    records = [dataset[i] for i in range(16)]
    positions = np.stack([r.positions_bohr for r in records])
    cc = [coupled_cluster(WATER_Z, x, "sto-3g", "ccsd") for x in positions]
    correlation_energy = np.array([e for e, _ in cc]) - np.array([r.energy_eh for r in records])
    correlation_forces = np.stack([f for _, f in cc]) - np.stack([r.forces_eh_per_bohr
                                                                   for r in records])
    z = torch.as_tensor(WATER_Z)
    model = load_model(model_path).double()
    frozen_by_caller = next(name for name, _ in model.named_parameters()
                            if name.startswith(ENERGY_PATH_PARAMETERS))
    model.get_parameter(frozen_by_caller).requires_grad_(False)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base_energy, base_forces = predict_energies_forces(model, z, positions)
    target_energy, target_forces = base_energy + correlation_energy, base_forces + correlation_forces
    tuned, history = fine_tune_energy_path(
        model, WATER_Z, positions[:10], target_energy[:10], target_forces[:10], positions[10:12],
        target_energy[10:12], target_forces[10:12], FineTuneConfig(epochs=10, batch_size=5))
    for key, value in tuned.state_dict().items():
        if not key.startswith(ENERGY_PATH_PARAMETERS):  # frozen: copied tensors, exact
            torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert min(h["validation_loss"] for h in history[1:]) < history[0]["validation_loss"]
    # the caller's freezing survives (a parameter it froze is trained here, then frozen again)
    assert {name: p.requires_grad for name, p in tuned.named_parameters()} == flags
    tuned_energy, tuned_forces = predict_energies_forces(tuned, z, positions[12:])
    energy_error = np.abs(tuned_energy - target_energy[12:]).mean()
    print(f"held-out |E error|: {1000 * energy_error:.2f} mEh (correlation energy "
          f"{1000 * correlation_energy.mean():.1f} mEh, spread {1000 * correlation_energy.std():.2f})")
    assert energy_error < 0.1 * np.abs(correlation_energy[12:]).mean()
    assert np.abs(tuned_forces - target_forces[12:]).mean() < np.abs(correlation_forces[12:]).mean()
