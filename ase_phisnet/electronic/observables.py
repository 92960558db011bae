"""Observables of a closed-shell density matrix: Mulliken charges and the dipole moment.

Atomic units: charges in e, positions in Bohr, dipoles in e·Bohr; AO matrices in PySCF's order.
"""

from __future__ import annotations

import torch

from ase_phisnet.core.integrals import charge_center_bohr

__all__ = ["charge_center_bohr", "dipole_moment_e_bohr", "mulliken_charges"]


def mulliken_charges(density_matrix, overlap, atomic_numbers, ao_slices) -> torch.Tensor:
    """Mulliken charges ``q_A = Z_A - sum_{mu in A} (P S)_{mu mu}`` in e, shape ``(..., A)``."""
    populations = torch.diagonal(density_matrix @ overlap, dim1=-2, dim2=-1)
    per_atom = torch.stack([populations[..., s].sum(-1) for s in ao_slices], dim=-1)
    return atomic_numbers.to(per_atom.dtype) - per_atom


def dipole_moment_e_bohr(density_matrix, dipole_integrals, atomic_numbers, positions_bohr,
                         origin_bohr=None):
    """``mu = sum_A Z_A (R_A - O) - Tr[P (r - O)]`` in e·Bohr about ``origin_bohr`` O
    (``(..., 3)``, default 0); ``dipole_integrals ([B,] 3, nao, nao)`` are ``<μ| r - O |ν>``
    (PySCF's ``int1e_r`` for O = 0; one set for all geometries, or one per geometry)."""
    electronic = torch.einsum("...mn,...xnm->...x", density_matrix, dipole_integrals)
    relative = positions_bohr if origin_bohr is None else positions_bohr - origin_bohr[..., None, :]
    nuclear = (atomic_numbers.to(positions_bohr.dtype)[:, None] * relative).sum(-2)
    return nuclear - electronic
