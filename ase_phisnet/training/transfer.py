"""Transfer learning: fine-tune the energy path of a DFT-trained potential on a higher level.

The model's energy is an electronic part (possibly none) plus a remainder
``sum_i (e_Z(i) + phi_i)``, e.g. ``E = E_nuc + 1/2 Tr[P (H_core + H)] + ...``
(:mod:`ase_phisnet.electronic.energy`), where ``phi`` is an atomwise MLP or a message-passing
network of the geometry and the electronic features. Fine-tuning on a few hundred coupled-cluster
energies and forces keeps the network and its predicted matrices (still the DFT ones, so
orbitals, charges and warm starts are unchanged) and trains only the *energy path beyond the
matrices*: the element energies ``e_Z`` (first refitted by least squares to the new level's mean
offset) and ``phi``. The correction learns ``E_high - E_DFT``, a smooth function of the
geometry, which a small training set constrains.

Loss per batch, with ``sigma_E``, ``sigma_F`` the standard deviations of the training
references: ``w_E (MSE_E / sigma_E^2 + MAE_E / sigma_E) + w_F (MSE_F / sigma_F^2 + MAE_F /
sigma_F)``; Adam; the weights with the lowest validation loss are kept, and the element energies
are refitted once more at the end (the force term dominates the loss and would leave a small
constant offset).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch

from ase_phisnet.electronic.model import PhiSNetModel, energy_and_forces, predict_energies_forces
from ase_phisnet.electronic.remainder import element_energy_offsets_eh

log = logging.getLogger(__name__)

#: Parameter-name prefixes of the energy path beyond the matrices.
ENERGY_PATH_PARAMETERS = ("remainder.",)


@dataclass(frozen=True)
class FineTuneConfig:
    """Fine-tuning settings (units: learning rate per step, weights dimensionless)."""

    epochs: int = 60
    learning_rate: float = 2e-3
    batch_size: int = 10
    energy_weight: float = 1.0
    force_weight: float = 10.0
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or not self.learning_rate > 0:
            raise ValueError("epochs and batch_size must be >= 1, learning_rate > 0")


def refit_element_energies(model: PhiSNetModel, atomic_numbers, positions_bohr, energy_eh,
                           charge: int = 0) -> None:
    """Shift ``e_Z`` by the least-squares per-element offset between the references and the
    model's energies (:func:`~ase_phisnet.electronic.remainder.element_energy_offsets_eh`) of
    geometries of one molecule with total ``charge`` (e)."""
    predicted, _ = predict_energies_forces(model, atomic_numbers, positions_bohr, charge=charge)
    shift = element_energy_offsets_eh(model.species(atomic_numbers).cpu().numpy(),
                                      len(model.atomic_numbers),
                                      np.asarray(energy_eh) - predicted)
    with torch.no_grad():
        model.remainder.element_energy_eh += torch.as_tensor(
            shift, dtype=model.remainder.element_energy_eh.dtype)


def _scaled(difference, sigma):
    return difference.pow(2).mean() / sigma**2 + difference.abs().mean() / sigma


def fine_tune_energy_path(model: PhiSNetModel, atomic_numbers, train_positions_bohr,
                          train_energy_eh, train_forces_eh_per_bohr, validation_positions_bohr,
                          validation_energy_eh, validation_forces_eh_per_bohr,
                          config: FineTuneConfig = FineTuneConfig(), charge: int = 0):
    """Fine-tune ``model``'s energy path (in place) and return ``(model, history)``.

    Geometries of one molecule with total ``charge`` (e). The parameters named by
    :data:`ENERGY_PATH_PARAMETERS` train (also one the caller had frozen) and no others; the
    model ends with the weights of the best validation epoch, and with each parameter's
    ``requires_grad`` as it came (also when training fails).
    """
    generator = torch.Generator().manual_seed(config.seed)
    dtype = next(model.parameters()).dtype
    z = torch.as_tensor(atomic_numbers)

    def tensors(*arrays):
        return [torch.as_tensor(np.asarray(a), dtype=dtype) for a in arrays]

    train = tensors(train_positions_bohr, train_energy_eh, train_forces_eh_per_bohr)
    validation = tensors(validation_positions_bohr, validation_energy_eh,
                         validation_forces_eh_per_bohr)
    refit_element_energies(model, z, train_positions_bohr, train_energy_eh, charge)
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        trainable = []
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith(ENERGY_PATH_PARAMETERS))
            if parameter.requires_grad:
                trainable.append(parameter)
        sigma_e = max(float(train[1].std()), 1e-5)
        sigma_f = float(train[2].std())
        optimizer = torch.optim.Adam(trainable, lr=config.learning_rate)

        def loss_of(positions, energy, forces):
            prediction, predicted_forces = energy_and_forces(model, z, positions, charge,
                                                             create_graph=True)
            return (config.energy_weight * _scaled(prediction.energy_eh - energy, sigma_e)
                    + config.force_weight * _scaled(predicted_forces - forces, sigma_f))

        def validation_loss():
            total = 0.0
            for first in range(0, len(validation[0]), config.batch_size):
                part = [t[first:first + config.batch_size] for t in validation]
                prediction, predicted_forces = energy_and_forces(model, z, part[0], charge)
                total += len(part[0]) * float(
                    config.energy_weight * _scaled(prediction.energy_eh.detach() - part[1], sigma_e)
                    + config.force_weight * _scaled(predicted_forces.detach() - part[2], sigma_f))
            return total / len(validation[0])

        best = (validation_loss(), copy.deepcopy(model.state_dict()))
        history = [{"epoch": 0, "validation_loss": best[0]}]
        for epoch in range(1, config.epochs + 1):
            order = torch.randperm(len(train[0]), generator=generator)
            for first in range(0, len(order), config.batch_size):
                index = order[first:first + config.batch_size]
                optimizer.zero_grad()
                loss_of(*(t[index] for t in train)).backward()
                optimizer.step()
            loss = validation_loss()
            history.append({"epoch": epoch, "validation_loss": loss})
            log.info("fine-tune epoch %d: validation loss %.4g", epoch, loss)
            if loss < best[0]:
                best = (loss, copy.deepcopy(model.state_dict()))
        model.load_state_dict(best[1])
        # The force term dominates the loss and leaves a small constant energy offset: remove it.
        refit_element_energies(model, z, train_positions_bohr, train_energy_eh, charge)
        return model, history
    finally:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(requires_grad[name])
