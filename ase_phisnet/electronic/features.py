r"""Invariant atom features of the electronic structure, for the learned energy remainder.

Atomic units (electrons, Eh). From the density matrix ``P`` and energy-weighted density matrix
``W = 2 C_occ eps C_occ^T`` of the solution of ``H C = S C eps``, each atom ``A`` gets, for
every angular momentum ``l`` up to :data:`FEATURE_MAX_L`, its Mulliken shell population and
its Mulliken share of the band energy:

.. math::

    n_{A,l} = \sum_{\mu \in A,\ l_\mu = l} (P S)_{\mu\mu}, \qquad
    e_{A,l} = \sum_{\mu \in A,\ l_\mu = l} (W S)_{\mu\mu}

so that ``sum_{A,l} n_{A,l}`` is the number of electrons and ``sum_{A,l} e_{A,l}`` the band
energy ``Tr[P H] = 2 sum_occ eps_i``. Both are sums over the ``m`` components of a shell of
diagonal elements of matrices that transform as ``D P D^T`` under a rotation, hence invariant
under rotations, reflections and translations, and permuted with the atoms. A shell an element
does not have contributes zero. They are smooth functions of the geometry wherever the
HOMO–LUMO gap is open (as ``P`` and ``W`` are), so forces through them are exact.

This is OrbNet's idea with PBE-like matrices: the energy network sees the electronic structure
through features, and a matrix error enters as feature noise, not as an energy error.
"""

from __future__ import annotations

import torch

from ase_phisnet.core.basis import BasisLayout
from ase_phisnet.electronic.eigensolver import ClosedShellSolution

#: Shell angular momenta with features of their own (s, p, d); higher shells join ``l = 2``.
FEATURE_MAX_L = 2
#: Names of the features, in order: populations, then band-energy shares.
FEATURE_NAMES: tuple[str, ...] = tuple(
    f"{kind}_{'spd'[l]}" for kind in ("population", "band_energy_eh")
    for l in range(FEATURE_MAX_L + 1))
NUM_ELECTRONIC_FEATURES = len(FEATURE_NAMES)


def ao_atom_shell_index(layout: BasisLayout, atomic_numbers) -> torch.Tensor:
    """``(nao,)`` long: ``atom * (FEATURE_MAX_L + 1) + min(l, FEATURE_MAX_L)`` of every AO in
    PySCF's AO order, the bucket each AO's diagonal element is summed into."""
    index = []
    for atom, z in enumerate(atomic_numbers):
        for shell in layout.element(int(z)).shells:
            bucket = atom * (FEATURE_MAX_L + 1) + min(shell.l, FEATURE_MAX_L)
            index.extend([bucket] * (2 * shell.l + 1))
    return torch.tensor(index, dtype=torch.long)


def electronic_atom_features(solution: ClosedShellSolution, overlap: torch.Tensor,
                             ao_index: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """``([B,] A, NUM_ELECTRONIC_FEATURES)``: the shell populations and band-energy shares of
    the module docstring (electrons, Eh), differentiable through ``P``, ``W`` and ``S``.

    Args:
        solution: The closed-shell solution (its ``P`` and ``W`` keep their graph).
        overlap: ``([B,] nao, nao)`` S of the same geometries.
        ao_index: :func:`ao_atom_shell_index` of the molecule.
        n_atoms: ``A``.
    """
    # diag(M S) without forming M S: sum_nu M_{mu nu} S_{nu mu} (S symmetric).
    populations = (solution.density_matrix * overlap).sum(-1)
    energies = (solution.energy_weighted_density_matrix * overlap).sum(-1)
    per_ao = torch.stack([populations, energies], dim=-1)  # ([B,] nao, 2)
    buckets = n_atoms * (FEATURE_MAX_L + 1)
    summed = per_ao.new_zeros(per_ao.shape[:-2] + (buckets, 2))
    summed = summed.index_add(-2, ao_index.to(per_ao.device), per_ao)
    summed = summed.reshape(per_ao.shape[:-2] + (n_atoms, FEATURE_MAX_L + 1, 2))
    return summed.transpose(-1, -2).reshape(per_ao.shape[:-2] + (n_atoms, -1))
