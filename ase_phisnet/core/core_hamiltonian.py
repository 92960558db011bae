"""The exact core Hamiltonian H_core(R) = T + V_nuc from PySCF's integrals, differentiable twice.

``H_core_μν = <μ| -½∇² - Σ_C Z_C / |r - R_C| |ν>`` (Eh) is a known function of the geometry
(PySCF ``int1e_kin + int1e_nuc``, ``mf.get_hcore()``), so a model can learn only
``ΔH = H - H_core - ...`` and add H_core back with exact forces and Hessians. H_core depends on R
through both basis functions (``∂φ_μ/∂R_A = -∇φ_μ`` for μ on atom A) and the nuclear
attraction ``V_C = -Z_C / |r - R_C|`` of every nucleus (``∂V_C/∂R_C = -∇V_C``, moved onto
the two functions by parts). With ∇ acting on the electron coordinate and ``h = T + V_nuc``:

    ∂H_μν/∂R_Ax = -δ(A, μ) <∂_x μ|h|ν> - Z_A <∂_x μ| 1/|r - R_A| |ν>  +  (μ ↔ ν)

(PySCF: ``int1e_ipkin + int1e_ipnuc`` for the functions, ``int1e_iprinv`` at nucleus A for the
potential, as in ``pyscf.grad.rhf.hcore_generator``; here ``int1e_grids_ip`` evaluates the
potential term of every nucleus in one call, about 2x faster than the generator's per-atom
loop, and the generator is the fallback for ECPs and finite nuclei). The second derivatives
have the same structure one order up (``int1e_ipipkin``/``ipkinip``/``ipipnuc``/``ipnucip``
for the functions, ``int1e_ipiprinv``/``iprinvip`` at each nucleus for the potential) and are
taken from ``pyscf.hessian.rhf.Hessian.hcore_generator``, whose block ``(a, b)`` is
``[x, y] -> ∂²H/∂R_ax ∂R_by``. Both generators differentiate in the nuclear coordinate (sign
+), checked against finite differences in tests/core/test_core_hamiltonian.py. No SCF is run:
the RHF object only hands the molecule to the generators.

Autograd sees H_core through :func:`exact_core_hamiltonian` (the plumbing of
:func:`~ase_phisnet.core.integrals.exact_matrix`, shared with the exact overlap). PySCF AO
order, Bohr in, Eh out.
"""

from __future__ import annotations

import numpy as np
import torch

from ase_phisnet.core.integrals import PerAtomDerivatives, exact_matrix
from ase_phisnet.core.molecule import build_molecule


class CoreHamiltonianIntegrals(PerAtomDerivatives):
    """PySCF core-Hamiltonian integrals of one molecule (atomic numbers and basis fixed) at any
    geometry; implements :class:`~ase_phisnet.core.integrals.ExactIntegrals`.

    Keeps one PySCF ``Mole`` and moves its atoms (``set_geom_``), like
    :class:`~ase_phisnet.core.integrals.OverlapIntegrals`.
    """

    def __init__(self, atomic_numbers, basis: str):
        from pyscf import scf
        from pyscf.grad import rhf as rhf_grad
        from pyscf.hessian import rhf as rhf_hessian

        self.atomic_numbers = np.asarray(atomic_numbers, dtype=int)
        n = len(self.atomic_numbers)
        charge = int(self.atomic_numbers.sum() % 2)  # integrals ignore it; keeps N even
        on_a_line = np.outer(np.arange(n), [3.0, 0.0, 0.0])  # placeholder; moved per call
        self.mol = build_molecule(self.atomic_numbers, on_a_line, basis, charge=charge)
        mean_field = scf.RHF(self.mol)  # never run: it carries mol (and get_hcore) only
        self._mean_field = mean_field
        self._gradients = rhf_grad.Gradients(mean_field)
        self._hessian = rhf_hessian.Hessian(mean_field)
        self._ao_ranges = self.mol.aoslice_by_atom()[:, 2:4]
        atom_of_ao = np.zeros(self.mol.nao, dtype=np.int64)
        for atom, (first, last) in enumerate(self._ao_ranges):
            atom_of_ao[first:last] = atom
        self._atom_of_ao = torch.as_tensor(atom_of_ao)
        self._charges = self.mol.atom_charges().astype(float)
        # int1e_grids_ip sees point charges only; ECPs and finite nuclei go through PySCF's
        # generator (build_molecule makes point nuclei, so only an ECP basis takes that path).
        self._point_charges_only = not self.mol.has_ecp() and not self.mol.nucmod

    @property
    def nao(self) -> int:
        return self.mol.nao

    def _at(self, positions_bohr: np.ndarray):
        self.mol.set_geom_(np.asarray(positions_bohr, dtype=float), unit="Bohr", symmetry=False)
        return self.mol

    def core_hamiltonian(self, positions_bohr) -> np.ndarray:
        """``H_core = T + V_nuc`` (nao, nao), Eh, at ``positions_bohr`` (A, 3): PySCF's
        ``get_hcore`` (ECP included where the basis has one)."""
        return self._mean_field.get_hcore(self._at(positions_bohr))

    def gradient(self, positions_bohr) -> np.ndarray:
        """``∂H_core_μν/∂R_Ax`` (A, 3, nao, nao), Eh/Bohr."""
        if not self._point_charges_only:
            mol = self._at(positions_bohr)
            generator = self._gradients.hcore_generator(mol)
            return np.stack([generator(atom) for atom in range(mol.natm)])
        parts = self.first(positions_bohr)
        function_moves, potential = parts[:, 0], parts[:, 1:]
        half = -self._charges[:, None, None, None] * potential.transpose(1, 0, 2, 3)
        for atom, (first, last) in enumerate(self._ao_ranges):
            half[atom, :, first:last] += function_moves[:, first:last]
        return half + half.transpose(0, 1, 3, 2)

    def first(self, positions_bohr) -> np.ndarray:
        """First-derivative data for :meth:`pull` and :meth:`push` (the
        :class:`~ase_phisnet.core.integrals.ExactIntegrals` protocol), Eh/Bohr.

        With point nuclei, the two integrals the derivative is made of, (3, 1 + A, nao, nao):
        ``[x, 0] = -<∂_x μ|h|ν>`` (the function μ moving with its atom) and
        ``[x, 1 + C] = <∂_x μ| 1/|r - R_C| |ν>`` (nucleus C's potential); the pullbacks
        contract them with the upstream gradient directly, without building the
        (A, 3, nao, nao) :meth:`gradient` (half the cost of the derivative for ethanol). With
        an ECP basis, :meth:`gradient` itself.
        """
        if not self._point_charges_only:
            return self.gradient(positions_bohr)
        mol = self._at(positions_bohr)
        # potential[x, C, μ, ν] = <∂_x μ| 1/|r - R_C| |ν>, every nucleus C in one call
        potential = mol.intor("int1e_grids_ip", grids=mol.atom_coords())
        function_moves = -mol.intor("int1e_ipkin") + np.einsum("c,xcmn->xmn", self._charges,
                                                               potential)  # -<∂_x μ|h|ν>
        return np.concatenate([function_moves[:, None], potential], axis=1)

    def pull(self, weights: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """``Σ_μν W_μν ∂H_core_μν/∂R_Ax`` (..., A, 3) from :meth:`first` (...)."""
        if not self._point_charges_only:
            return super().pull(weights, first)
        symmetric = weights + weights.transpose(-1, -2)
        function_moves, potential = first[..., 0, :, :], first[..., 1:, :, :]
        own = torch.einsum("...mn,...xmn->...mx", symmetric, function_moves)  # (..., nao, 3)
        nuclei = torch.einsum("...mn,...xcmn->...cx", symmetric, potential)  # (..., A, 3)
        return self._atoms_sum(own) - self._charges_like(first)[:, None] * nuclei

    def push(self, displacement: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """``Σ_Ax u_Ax ∂H_core/∂R_Ax`` (..., nao, nao) for u (..., A, 3)."""
        if not self._point_charges_only:
            return super().push(displacement, first)
        function_moves, potential = first[..., 0, :, :], first[..., 1:, :, :]
        spread = displacement.index_select(-2, self._atom_of_ao_on(displacement))
        weighted = displacement * self._charges_like(first)[:, None]  # Z_C u_C
        half = (torch.einsum("...mx,...xmn->...mn", spread, function_moves)
                - torch.einsum("...cx,...xcmn->...mn", weighted, potential))
        return half + half.transpose(-1, -2)

    def _charges_like(self, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self._charges, dtype=like.dtype, device=like.device)

    def _atom_of_ao_on(self, like: torch.Tensor) -> torch.Tensor:
        return self._atom_of_ao.to(like.device)

    def _atoms_sum(self, per_ao: torch.Tensor) -> torch.Tensor:
        """Sum ``(..., nao, 3)`` over each atom's AOs -> ``(..., A, 3)``."""
        shape = (*per_ao.shape[:-2], len(self.atomic_numbers), 3)
        return per_ao.new_zeros(shape).index_add_(-2, self._atom_of_ao_on(per_ao), per_ao)

    def _hessian_blocks(self, positions_bohr):
        """Yield ``(a, b, ∂²H/∂R_a ∂R_b)`` with blocks (3, 3, nao, nao) for ``a <= b``; the
        block (b, a) is ``block.transpose(1, 0, 2, 3)``."""
        mol = self._at(positions_bohr)
        generator = self._hessian.hcore_generator(mol)
        for a in range(mol.natm):
            for b in range(a, mol.natm):
                yield a, b, generator(a, b)

    def hessian(self, positions_bohr) -> np.ndarray:
        """``∂²H_core_μν/∂R_Ax ∂R_By`` (A, 3, A, 3, nao, nao), Eh/Bohr², symmetric in
        (A, x) ↔ (B, y); ``.reshape(3A, 3A, nao, nao)`` is the Cartesian Hessian of each
        element. 8 (3A)² nao² bytes: for large molecules use :meth:`weighted_hessian`."""
        n, nao = len(self.atomic_numbers), self.nao
        out = np.empty((n, 3, n, 3, nao, nao))
        for a, b, block in self._hessian_blocks(positions_bohr):
            out[a, :, b] = block
            out[b, :, a] = block.transpose(1, 0, 2, 3)
        return out

    def weighted_hessian(self, positions_bohr, weights) -> np.ndarray:
        """``Σ_μν W_μν ∂²H_core_μν/∂R_Ax ∂R_By`` (A, 3, A, 3), Eh/Bohr² per unit W, for
        weights W (nao, nao), without holding the whole :meth:`hessian`."""
        n = len(self.atomic_numbers)
        out = np.empty((n, 3, n, 3))
        for a, b, block in self._hessian_blocks(positions_bohr):
            out[a, :, b] = np.einsum("mn,xymn->xy", weights, block)
            out[b, :, a] = out[a, :, b].T
        return out

    def value(self, positions_bohr) -> np.ndarray:
        """:class:`~ase_phisnet.core.integrals.ExactIntegrals`'s matrix."""
        return self.core_hamiltonian(positions_bohr)


def exact_core_hamiltonian(integrals: CoreHamiltonianIntegrals, positions_bohr: torch.Tensor,
                           twice_differentiable: bool = True) -> torch.Tensor:
    """H_core (..., nao, nao), Eh, at ``positions_bohr`` ((A, 3) or (B, A, 3), Bohr), as a
    differentiable tensor: exact forces through the first derivative, exact Hessians through a
    second backward.

    With ``twice_differentiable=False`` dH_core/dR stays exact and differentiable in whatever
    multiplies it (force training), but is constant in R: a second derivative in R through it
    silently misses the d²H_core/dR² terms (see
    :func:`~ase_phisnet.core.integrals.exact_overlap`). The second derivative costs about
    (A² / 2) PySCF generator calls per geometry (ethanol, def2-SVP: ~40 ms on one core), once
    per backward graph.
    """
    return exact_matrix(integrals, positions_bohr, twice_differentiable)

