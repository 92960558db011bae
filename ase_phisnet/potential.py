r"""The energy model: total energy from the predicted matrices, forces by autograd.

Atomic units (Eh, Bohr). For a closed shell with ``n_occ = (sum Z - charge) / 2`` doubly occupied
orbitals of ``H C = S C eps`` (predicted matrices, :mod:`ase_phisnet.electronic`), the model's
``energy_model`` (:class:`~ase_phisnet.model.ModelConfig`) is one of

.. math::

    E_{phisnet} = E_{nuc} + \tfrac12 \mathrm{Tr}[P (H_{core} + H)] + \sum_i \big(e_{Z_i} + \phi(x_i)\big)

    E_{band\_structure} = \mathrm{Tr}[P H] + \sum_i \big(e_{Z_i} + \phi(x_i)\big)

``"phisnet"``: PhiSNet's energy, ``E_nuc + sum_occ [eps_i + (C^T H_core C)_ii]``, with the
nuclear repulsion exact; for Hartree–Fock at self-consistency the first two terms are the total
energy. For Kohn–Sham DFT they miss ``E_xc - 1/2 Tr[P v_xc]`` and the double counting of the
Coulomb term beyond what ``H_core`` absorbs, smooth functions of the geometry; the last term, an
element constant plus a small MLP of each atom's invariant features, learns that remainder.
Its weakness is its sensitivity to the density: ``1/2 Tr[dP H_core]`` moves to first order with
any error of ``P``, weighted by the large core-Hamiltonian elements, so the matrices must be very
accurate before energies follow (``benchmarks/band_energy_residual.py``).

``"band_structure"``: the split of density-functional tight binding, the band-structure energy
``Tr[P H] = 2 sum_occ eps_i`` plus a short-ranged remainder (DFTB's repulsive energy: nuclear
repulsion, double counting, exchange-correlation) that the atomwise term learns. ``Tr[P H]`` is
stationary in ``P`` (first order: ``Tr[P dH]``, the orbital energies' own errors), so it forgives
matrix errors that ``"phisnet"`` amplifies; it needs no core H.

With ``pair_repulsion="zbl"`` the atomwise term carries a fixed short-range screened nuclear
repulsion as well (:mod:`ase_phisnet.repulsion`): the wall where atoms come closer than a bond,
which the band-structure model does not have of its own.

Trained end to end, the matrices and the correction share the work; the electronic part keeps
the energy tied to the predicted orbitals. Forces are ``-dE/dR`` by autograd (exact, finite at
degenerate occupied orbitals); Hessians by double backward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ase_phisnet.electronic import (
    ClosedShellSolution,
    band_energy_eh,
    band_structure_energy_eh,
    nuclear_repulsion_eh,
    solve_closed_shell,
)
from ase_phisnet.model import ENERGY_MODEL_MATRICES, ENERGY_MODELS, PhiSNet
from ase_phisnet.reference import check_closed_shell


@dataclass
class EnergyPrediction:
    """Energy and the electronic structure behind it (tensors keep their graph)."""

    energy_eh: torch.Tensor  # ([B,])
    matrices: dict[str, torch.Tensor]  # ([B,] nao, nao) in PySCF AO order
    solution: ClosedShellSolution


def n_occupied_orbitals(atomic_numbers, charge: int) -> int:
    """Doubly occupied orbitals of a closed shell; raises OpenShellError for odd counts."""
    return check_closed_shell(atomic_numbers.tolist() if hasattr(atomic_numbers, "tolist")
                              else atomic_numbers, charge) // 2


def energy_from_outputs(outputs: dict, atomic_numbers: torch.Tensor,
                        positions_bohr: torch.Tensor, n_occupied: int,
                        derivative_order: int = 2,
                        energy_model: str = "phisnet") -> EnergyPrediction:
    """Total energy (Eh) from a :class:`PhiSNet` forward pass's outputs.

    ``derivative_order``: how often the energy may be differentiated (see
    :func:`~ase_phisnet.electronic.solve_closed_shell`; 1 is faster). ``energy_model``: the
    model's ``config.energy_model`` (module docstring).
    """
    if energy_model not in ENERGY_MODELS:
        raise ValueError(f"energy_model must be one of {ENERGY_MODELS}, got {energy_model!r}")
    needed = ENERGY_MODEL_MATRICES[energy_model]
    missing = set(needed) - set(outputs)
    if missing:
        raise ValueError(f"the {energy_model!r} energy model needs the model to predict "
                         f"{sorted(missing)}")
    hamiltonian, overlap = outputs["hamiltonian"], outputs["overlap"]
    solution = solve_closed_shell(hamiltonian, overlap, n_occupied,
                                  derivative_order=derivative_order)
    if energy_model == "band_structure":
        electronic = band_structure_energy_eh(solution, hamiltonian)
    else:
        electronic = (nuclear_repulsion_eh(atomic_numbers, positions_bohr)
                      + band_energy_eh(solution, hamiltonian, outputs["core_hamiltonian"]))
    energy = electronic + outputs["energy_correction_eh"]
    matrices = {k: outputs[k] for k in needed}
    return EnergyPrediction(energy, matrices, solution)


def predict_energy(model: PhiSNet, atomic_numbers: torch.Tensor, positions_bohr: torch.Tensor,
                   charge: int = 0, derivative_order: int = 2) -> EnergyPrediction:
    """Energy of one geometry ``(A, 3)`` or a batch ``(B, A, 3)`` of one molecule, in Eh.

    The network runs in its parameters' dtype; the matrices are cast to the positions' dtype
    for the eigensolver and energy (a float32 network with a float64 eigensolver is faster
    and keeps the energy's derivative consistent at the float32 level of the matrices).
    """
    n_occupied = n_occupied_orbitals(atomic_numbers, charge)
    network_dtype = next(model.parameters()).dtype
    outputs = model(atomic_numbers, positions_bohr.to(network_dtype))
    if network_dtype != positions_bohr.dtype:  # e.g. float32 network, float64 eigensolver
        outputs = {k: v.to(positions_bohr.dtype) for k, v in outputs.items()}
    return energy_from_outputs(outputs, atomic_numbers, positions_bohr, n_occupied,
                               derivative_order, model.config.energy_model)


def energy_and_forces(model: PhiSNet, atomic_numbers: torch.Tensor, positions_bohr: torch.Tensor,
                      charge: int = 0, create_graph: bool = False):
    """``(prediction, forces (…, A, 3) in Eh/Bohr)`` with forces ``-dE/dR`` by autograd.

    Without ``create_graph`` the forces are the last derivative taken, so the eigensolver's
    first-order path is used; with it (force training, Hessians) the second-order one.
    """
    positions = positions_bohr.detach().requires_grad_(True)
    with torch.enable_grad():
        prediction = predict_energy(model, atomic_numbers, positions, charge,
                                    derivative_order=2 if create_graph else 1)
        (gradient,) = torch.autograd.grad(prediction.energy_eh.sum(), positions,
                                          create_graph=create_graph)
    return prediction, -gradient


def hessian(model: PhiSNet, atomic_numbers: torch.Tensor, positions_bohr: torch.Tensor,
            charge: int = 0) -> torch.Tensor:
    """``d^2E/dR^2`` of one geometry, shape ``(3A, 3A)`` in Eh/Bohr^2, by double backward."""
    positions = positions_bohr.detach().requires_grad_(True)
    with torch.enable_grad():
        energy = predict_energy(model, atomic_numbers, positions, charge).energy_eh
        (gradient,) = torch.autograd.grad(energy, positions, create_graph=True)
        gradient = gradient.reshape(-1)
        rows = [torch.autograd.grad(gradient[k], positions, retain_graph=True)[0].reshape(-1)
                for k in range(gradient.shape[0])]
    matrix = torch.stack(rows)
    return 0.5 * (matrix + matrix.T)


def predict_energies_forces(model: PhiSNet, atomic_numbers, positions_bohr, batch_size=10):
    """``(energies (n,) Eh, forces (n, N, 3) Eh/Bohr)`` of ``model`` for geometries of one
    molecule, as NumPy float64."""
    dtype = next(model.parameters()).dtype
    energies, forces = [], []
    for first in range(0, len(positions_bohr), batch_size):
        xyz = torch.as_tensor(np.asarray(positions_bohr[first:first + batch_size]), dtype=dtype)
        prediction, batch_forces = energy_and_forces(model, atomic_numbers, xyz)
        energies.append(prediction.energy_eh.detach().double().cpu().numpy())
        forces.append(batch_forces.detach().double().cpu().numpy())
    return np.concatenate(energies), np.concatenate(forces)
