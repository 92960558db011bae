r"""The energy models: the electronic term of the total energy, from the predicted matrices.

Atomic units (Eh, Bohr). For a closed shell with ``n_occ = (sum Z - charge) / 2`` doubly occupied
orbitals of ``H C = S C eps`` (predicted matrices, :mod:`ase_phisnet.electronic.eigensolver`), the
model's ``energy_model`` (:data:`EnergyModelName`, chosen in
:class:`~ase_phisnet.electronic.model.ModelConfig`) is one of

.. math::

    E_{phisnet} = E_{nuc} + \tfrac12 \mathrm{Tr}[P (H_{core} + H)]
                  + \sum_i \big(e_{Z_i} + \phi(x_i)\big)

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

``"none"``: no electronic term; the electronic structure enters the energy only through the
invariant features of a ``"message_passing"`` remainder
(:mod:`ase_phisnet.electronic.features`), so matrix errors become feature noise that the
remainder can learn to discount instead of an energy error it must cancel.

With ``pair_repulsion="zbl"`` the atomwise term carries a fixed short-range screened nuclear
repulsion as well (:mod:`ase_phisnet.electronic.priors`): the wall where atoms come closer than a
bond, which the band-structure model does not have of its own.

Trained end to end, the matrices and the correction share the work; the electronic part keeps
the energy tied to the predicted orbitals. Forces are ``-dE/dR`` by autograd (exact, finite at
degenerate occupied orbitals); Hessians by double backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

from ase_phisnet.core.molecule import check_closed_shell
from ase_phisnet.electronic.eigensolver import ClosedShellSolution, solve_closed_shell

EnergyModelName = Literal["phisnet", "band_structure", "none"]
ENERGY_MODELS: tuple[str, ...] = get_args(EnergyModelName)
#: The matrices each energy model needs.
ENERGY_MODEL_MATRICES: dict[str, tuple[str, ...]] = {
    "phisnet": ("hamiltonian", "overlap", "core_hamiltonian"),
    "band_structure": ("hamiltonian", "overlap"),
    "none": ("hamiltonian", "overlap"),
}


def check_energy_model(name: str) -> str:
    """``name`` if it is one of :data:`ENERGY_MODELS`; a ``ValueError`` listing them otherwise."""
    if name not in ENERGY_MODELS:
        raise ValueError(f"energy_model must be one of {ENERGY_MODELS}, got {name!r}")
    return name


def nuclear_repulsion_eh(atomic_numbers: torch.Tensor, positions_bohr: torch.Tensor):
    """``sum_{i<j} Z_i Z_j / r_ij`` in Eh, shape ``positions.shape[:-2]``.

    >>> z = torch.tensor([1, 1])
    >>> float(nuclear_repulsion_eh(z, torch.tensor([[0., 0, 0], [0, 0, 1.4]], dtype=torch.float64)))
    0.7142857142857143
    """
    charges = atomic_numbers.to(positions_bohr.dtype)
    n = charges.shape[0]
    i, j = torch.triu_indices(n, n, offset=1, device=positions_bohr.device)
    distances = (positions_bohr[..., i, :] - positions_bohr[..., j, :]).norm(dim=-1)
    return (charges[i] * charges[j] / distances).sum(-1)


def band_energy_eh(solution: ClosedShellSolution, hamiltonian, core_hamiltonian):
    """``1/2 Tr[P (H_core + H)]`` in Eh: the electronic energy of PhiSNet's energy model."""
    return 0.5 * (solution.density_matrix * (core_hamiltonian + hamiltonian)).sum((-1, -2))


def band_structure_energy_eh(solution: ClosedShellSolution, hamiltonian):
    """``Tr[P H] = 2 sum_occ eps_i`` in Eh: the band-structure energy (as in DFTB).

    Computed from the density matrix, whose derivative stays finite at degenerate occupied
    orbitals; to first order it moves only with ``H`` (``Tr[P dH]``), never with ``P``.
    """
    return (solution.density_matrix * hamiltonian).sum((-1, -2))


@dataclass
class EnergyPrediction:
    """Energy and the electronic structure behind it (tensors keep their graph)."""

    energy_eh: torch.Tensor  # ([B,])
    matrices: dict[str, torch.Tensor]  # ([B,] nao, nao) in PySCF AO order
    solution: ClosedShellSolution
    #: ``([B,] A, X)`` the electronic atom features a message-passing remainder took, if any.
    features: torch.Tensor | None = None


def n_occupied_orbitals(atomic_numbers, charge: int) -> int:
    """Doubly occupied orbitals of a closed shell; raises OpenShellError for odd counts."""
    return check_closed_shell(atomic_numbers.tolist() if hasattr(atomic_numbers, "tolist")
                              else atomic_numbers, charge) // 2


def electronic_energy_eh(energy_model: str, solution: ClosedShellSolution,
                         matrices: dict[str, torch.Tensor], atomic_numbers: torch.Tensor,
                         positions_bohr: torch.Tensor) -> torch.Tensor:
    """The electronic term of ``energy_model`` (module docstring), ``([B,])`` Eh."""
    if energy_model == "band_structure":
        return band_structure_energy_eh(solution, matrices["hamiltonian"])
    if energy_model == "none":
        return positions_bohr.new_zeros(positions_bohr.shape[:-2])
    if energy_model == "phisnet":
        return (nuclear_repulsion_eh(atomic_numbers, positions_bohr)
                + band_energy_eh(solution, matrices["hamiltonian"], matrices["core_hamiltonian"]))
    raise ValueError(f"energy_model must be one of {ENERGY_MODELS}, got {energy_model!r}")


def energy_from_outputs(outputs: dict, atomic_numbers: torch.Tensor,
                        positions_bohr: torch.Tensor, n_occupied: int,
                        derivative_order: int = 2,
                        energy_model: str = "phisnet") -> EnergyPrediction:
    """Total energy (Eh): the electronic term of ``energy_model`` plus the model's
    ``remainder_energy_eh`` (learned remainder and priors), from the outputs of a
    :class:`~ase_phisnet.electronic.model.PhiSNetModel` forward pass.

    ``derivative_order``: how often the energy may be differentiated (see
    :func:`~ase_phisnet.electronic.eigensolver.solve_closed_shell`; 1 is faster).
    """
    needed = ENERGY_MODEL_MATRICES[check_energy_model(energy_model)]
    missing = set(needed) - set(outputs)
    if missing:
        raise ValueError(f"the {energy_model!r} energy model needs the model to predict "
                         f"{sorted(missing)}")
    solution = solve_closed_shell(outputs["hamiltonian"], outputs["overlap"], n_occupied,
                                  derivative_order=derivative_order)
    matrices = {k: outputs[k] for k in needed}
    electronic = electronic_energy_eh(energy_model, solution, matrices, atomic_numbers,
                                      positions_bohr)
    return EnergyPrediction(electronic + outputs["remainder_energy_eh"], matrices, solution)
