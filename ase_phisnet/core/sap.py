"""The superposition-of-atomic-potentials matrix V_SAP(R) from PySCF's integrals, differentiable
twice in R.

PySCF's SAP guess (``pyscf.scf.hf.make_sap``, doi:10.1063/5.0004046) screens the bare nuclei
of H_core with a fitted electron cloud per atom: atom C carries the charge density (in units
of e) ``g_C(r) = Σ_k c_Ck (α_Ck/π)^{3/2} exp(-α_Ck |r - R_C|²)``, each Gaussian normalized to
one and the coefficients of the ``sapgrasplarge`` fit summing to ``-Z_C`` (the neutral atom's
electrons), so V_SAP, the electron's potential energy in these clouds, is repulsive:

    V_SAP_μν = -Σ_C (μν|g_C) = -Σ_C ∬ φ_μ(r - R_a) φ_ν(r - R_b) g_C(r' - R_C) / |r - r'| dr dr'

(Eh; μ on atom a, ν on atom b), PySCF's ``int3c2e`` over the AO shells and one contracted
s "charge shell" per atom. ``H_core + V_SAP`` is PySCF's SAP guess Hamiltonian, so a model can
learn ``ΔH = H - H_core - V_SAP``, much smaller and smoother than H, and add V_SAP back exactly.

Derivatives. ``I^C_μν = (μν|g_C)`` depends on R only through ``d_a = R_a - R_C`` and
``d_b = R_b - R_C`` (translation invariance, term by term), so with
``M[μ, C, A] = δ(A, atom of μ) - δ(A, C)`` (``∂d_a/∂R_A`` for μ, ``∂d_b/∂R_A`` for ν), only
the derivatives on the two AO functions are needed. PySCF's ∇ acts on the electron coordinate
(``∂φ_μ/∂R_a = -∇φ_μ``):

    J[x, μ, ν, C]    = (∂_x μ ν | g_C)          (int3c2e_ip1)
    P[x, y, μ, ν, C] = (∂_x ∂_y μ ν | g_C)      (int3c2e_ipip1)
    Q[x, y, μ, ν, C] = (∂_x μ ∂_y ν | g_C)      (int3c2e_ipvip1)

    ∂V_μν/∂R_Ax = Σ_C M[μ, C, A] J[x, μ, ν, C] + (μ ↔ ν)                     (A, 3, nao, nao)
    ∂²V_μν/∂R_Ax ∂R_By = -Σ_C ( M[μ,C,A] M[μ,C,B] P[x,y,μ,ν,C]
                               + M[μ,C,A] M[ν,C,B] Q[x,y,μ,ν,C] ) + (μ ↔ ν)   (A, 3, A, 3, nao, nao)

where (μ ↔ ν) is the same term with μ and ν swapped (its transpose in μν). Both derivatives are
exact: the charge-centre integrals ``int3c2e_ip2``, ``ip1ip2``, ``ipip2`` follow from J, P, Q
by translation invariance (the tests check ``ip2 = -(J + Jᵀ)``). Every integral used is in
PySCF's ``moleintor`` table.

The AO shells and every atom's charge shell live in one concatenated PySCF molecule built
once per molecule; a call only writes the positions into its coordinate slots (the charge
shell of atom A at R_A). Autograd sees V_SAP through :func:`exact_sap` (the plumbing of
:func:`~ase_phisnet.core.integrals.exact_matrix`). PySCF AO order, Bohr in, Eh out.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch

from ase_phisnet.core.errors import UnsupportedElementError
from ase_phisnet.core.integrals import PerAtomDerivatives, exact_matrix
from ase_phisnet.core.molecule import build_molecule

#: The Gaussian-charge fits of the atomic potentials: PySCF's ``sapgrasplarge`` (its default
#: for the SAP guess; 5 Gaussians for H, 11 for C and O, 12 for N) and ``sapgraspsmall`` (3 and
#: 6), and ``sapcompact`` (2 for H and He, 3 for heavier elements), refit from
#: ``sapgrasplarge`` by :func:`compact_sap_fit`. The integrals' cost grows with the number of
#: Gaussians: ethanol has 63 in ``sapgrasplarge``, 36 in ``sapgraspsmall``, 21 in ``sapcompact``.
SAPBasisName = Literal["sapgrasplarge", "sapgraspsmall", "sapcompact"]
SAP_BASES: tuple[str, ...] = get_args(SAPBasisName)

#: Radii (Bohr) on which :func:`compact_sap_fit` matches the atomic potential: from inside the
#: core (0.3 Bohr, where the AO products of neighbouring atoms start to matter) to 12 Bohr,
#: where the fits differ by < 1 mEh; both tend to ``Z/r`` (< 1e-8 Eh apart beyond 25 Bohr).
COMPACT_FIT_RADII_BOHR = np.geomspace(0.3, 12.0, 300)


def gaussian_charge_potential(fit: np.ndarray, radius_bohr: np.ndarray) -> np.ndarray:
    """Potential energy (Eh) of an electron at ``radius_bohr`` from a spherical cloud of
    normalized Gaussian charges ``fit`` (rows ``[α (Bohr⁻²), c (e)]``):
    ``v(r) = -Σ_k c_k erf(√α_k r) / r`` with the sign of ``V_SAP = -Σ_C (μν|g_C)``, so that
    ``Σ c_k = -Z`` (electrons) gives ``v → Z/r`` far away."""
    from scipy.special import erf

    r = np.asarray(radius_bohr, dtype=float)[..., None]
    return -(fit[:, 1] * erf(np.sqrt(fit[:, 0]) * r)).sum(-1) / r[..., 0]


def compact_sap_fit(symbol: str, n_gaussians: int | None = None) -> np.ndarray:
    """A fit of ``symbol``'s ``sapgrasplarge`` potential with few Gaussian charges, ``(n, 2)``
    rows ``[exponent (Bohr⁻²), coefficient (e)]`` like :func:`load_sap_basis`.

    ``n_gaussians`` (default 2 for H and He, else 3) of ``sapgrasplarge``'s exponents are
    kept: the subset whose refit potential has the smallest largest error on
    :data:`COMPACT_FIT_RADII_BOHR`. For each subset the coefficients are the least-squares fit of
    ``r v(r)`` (the screened charge seen at r) under the constraint that they sum to the
    large fit's total charge, ``-Z``, so the potential keeps its exact ``Z/r`` tail. Every step
    is a deterministic linear solve: the same numbers on every machine to ~1e-14. The largest
    potential errors against ``sapgrasplarge`` beyond 1 Bohr: H 7 mEh, C and O 0.04 Eh (the
    potential there is several Eh).
    """
    from itertools import combinations

    large = load_sap_basis("sapgrasplarge", symbol)
    n = n_gaussians if n_gaussians is not None else (2 if symbol in ("H", "He") else 3)
    if not 1 <= n <= len(large):
        raise ValueError(f"n_gaussians must be in 1..{len(large)} for {symbol}, got {n}")
    r = COMPACT_FIT_RADII_BOHR
    target = gaussian_charge_potential(large, r)
    total = large[:, 1].sum()
    best_error, best_fit = np.inf, None
    for subset in combinations(range(len(large)), n):
        exponents = large[list(subset), 0]
        # columns: the charge seen at r, r v(r), of a unit Gaussian of each exponent
        seen = np.stack([-r * gaussian_charge_potential(np.array([[a, 1.0]]), r)
                         for a in exponents], axis=1)
        # c_last = total - sum(c_others): solve for the others only
        free = seen[:, :-1] - seen[:, -1:]
        rhs = -r * target - total * seen[:, -1]
        others = np.linalg.lstsq(free, rhs, rcond=None)[0] if n > 1 else np.zeros(0)
        fit = np.stack([exponents, np.append(others, total - others.sum())], axis=1)
        error = np.abs(gaussian_charge_potential(fit, r) - target).max()
        if error < best_error:
            best_error, best_fit = error, fit
    return best_fit


def load_sap_basis(sap_basis: str, symbol: str) -> np.ndarray:
    """The SAP fit of one element, ``(n, 2)`` rows ``[exponent (Bohr⁻²), coefficient]``:
    ``"sapcompact"`` from :func:`compact_sap_fit`, otherwise loaded as
    ``pyscf.scf.hf.SCF.init_guess_by_sap`` loads ``mf.sap_basis`` (a name such as
    ``"sapgrasplarge"`` or a basis file)."""
    from pyscf.gto.basis import load

    if sap_basis == "sapcompact":
        return compact_sap_fit(symbol)
    try:
        element = load(sap_basis, symbol)
    except Exception as error:  # PySCF raises bare exceptions for unknown elements and names
        raise UnsupportedElementError(f"SAP basis {sap_basis!r} has no {symbol}: {error}") \
            from error
    shell = element[symbol][0] if isinstance(element, dict) else element[0]
    return np.asarray(shell[1:], dtype=float)


class SAPIntegrals(PerAtomDerivatives):
    """PySCF SAP integrals of one molecule (atomic numbers, basis and SAP basis fixed) at any
    geometry; implements :class:`~ase_phisnet.core.integrals.ExactIntegrals`.

    ``atomic_numbers`` (A,), ``basis`` the AO basis (e.g. ``"def2-svp"``), ``sap_basis`` the
    Gaussian-charge fit (PySCF's default for its SAP guess).
    """

    def __init__(self, atomic_numbers, basis: str, sap_basis: str = "sapgrasplarge"):
        from pyscf import gto
        from pyscf.gto.mole import PTR_COORD, fakemol_for_cgtf_charge

        self.atomic_numbers = np.asarray(atomic_numbers, dtype=int)
        self.basis, self.sap_basis = basis, sap_basis
        n = len(self.atomic_numbers)
        charge = int(self.atomic_numbers.sum() % 2)  # integrals ignore it; keeps N even
        on_a_line = np.outer(np.arange(n), [3.0, 0.0, 0.0])  # placeholder; moved per call
        mol = build_molecule(self.atomic_numbers, on_a_line, basis, charge=charge)
        fits = {s: load_sap_basis(sap_basis, s) for s in {mol.atom_symbol(i) for i in range(n)}}
        combined = mol
        for atom in range(n):  # charge shell `atom` is the combined molecule's atom n + atom
            fit = fits[mol.atom_symbol(atom)]
            combined = gto.conc_mol(combined, fakemol_for_cgtf_charge(
                on_a_line[atom:atom + 1], fit[:, 0], fit[:, 1]))
        self._combined = combined
        self._nao = mol.nao
        # int3c2e over (AO shells, AO shells | charge shells): index C of the result is atom C
        self._shls_slice = (0, mol.nbas, 0, mol.nbas, mol.nbas, combined.nbas)
        # _env slots of each atom's coordinates, for the AO centre and the charge centre
        slots = combined._atm[:, PTR_COORD][:, None] + np.arange(3)
        self._slots = np.stack([slots[:n], slots[n:]])  # (2, A, 3)
        atom_of_ao = np.zeros(self._nao, dtype=int)
        for atom, (first, last) in enumerate(mol.aoslice_by_atom()[:, 2:4]):
            atom_of_ao[first:last] = atom
        self.atom_of_ao = atom_of_ao
        # M[μ, C, A] = δ(A, atom of μ) - δ(A, C) = ∂(R_a - R_C)/∂R_A
        eye = np.eye(n)
        self._relative = eye[atom_of_ao][:, None, :] - eye[None, :, :]  # (nao, A, A)

    @property
    def nao(self) -> int:
        return self._nao

    def _intor(self, name: str, positions_bohr, aosym: str = "s1") -> np.ndarray:
        """``name`` over ``(μ ν | g_C)`` at ``positions_bohr`` (A, 3): (comp, nao, nao, A), or
        (comp, nao (nao + 1) / 2, A) for ``aosym="s2ij"`` (lower triangle μ >= ν)."""
        positions = np.asarray(positions_bohr, dtype=float)
        if positions.shape != (len(self.atomic_numbers), 3):
            raise ValueError(f"need positions ({len(self.atomic_numbers)}, 3) in Bohr; "
                             f"got {positions.shape}")
        self._combined._env[self._slots] = positions  # both the AO and the charge centres
        out = self._combined.intor(name, shls_slice=self._shls_slice, aosym=aosym)
        trailing = 3 if aosym == "s1" else 2  # (nao, nao, A) or (pairs, A)
        return out.reshape(-1, *out.shape[-trailing:])  # a leading comp axis, also for comp 1

    def sap_potential(self, positions_bohr) -> np.ndarray:
        """``V_SAP`` (nao, nao), Eh, at ``positions_bohr`` (A, 3): PySCF's ``make_sap``."""
        from pyscf import lib

        # (μν|g_C) = (νμ|g_C): the lower triangle only, half the work of the full matrix
        packed = self._intor("int3c2e", positions_bohr, aosym="s2ij")[0]  # (nao (nao+1)/2, A)
        return -lib.unpack_tril(packed.sum(-1))

    def gradient(self, positions_bohr) -> np.ndarray:
        """``∂V_SAP_μν/∂R_Ax`` (A, 3, nao, nao), Eh/Bohr."""
        half = np.einsum("mca,xmnc->axmn", self._relative, self.first(positions_bohr),
                         optimize=True)
        return half + half.transpose(0, 1, 3, 2)

    def first(self, positions_bohr) -> np.ndarray:
        """``J[x, μ, ν, C] = (∂_x μ ν|g_C)`` (3, nao, nao, A), Eh/Bohr: the first-derivative
        data of :meth:`pull` and :meth:`push` (the
        :class:`~ase_phisnet.core.integrals.ExactIntegrals` protocol), which contract it with
        ``M`` and the upstream gradient directly instead of building :meth:`gradient`."""
        return self._intor("int3c2e_ip1", positions_bohr)

    def pull(self, weights: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """``Σ_μν W_μν ∂V_SAP_μν/∂R_Ax = Σ_μC M[μ, C, A] Σ_ν (W + Wᵀ)_μν J[x, μ, ν, C]``
        (..., A, 3) from ``first`` = J (..., 3, nao, nao, A)."""
        symmetric = weights + weights.transpose(-1, -2)
        per_charge = torch.einsum("...mn,...xmnc->...mcx", symmetric, first)
        return torch.einsum("mca,...mcx->...ax", self._relative_like(first), per_charge)

    def push(self, displacement: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """``Σ_Ax u_Ax ∂V_SAP/∂R_Ax`` (..., nao, nao) for u (..., A, 3), from J."""
        moved = torch.einsum("mca,...ax->...mcx", self._relative_like(first), displacement)
        half = torch.einsum("...mcx,...xmnc->...mn", moved, first)
        return half + half.transpose(-1, -2)

    def _relative_like(self, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self._relative, dtype=like.dtype, device=like.device)

    def _second(self, positions_bohr):
        """``P`` and ``Q`` of the module docstring, each (3, 3, nao, nao, A)."""
        nao, n = self._nao, len(self.atomic_numbers)
        ipip = self._intor("int3c2e_ipip1", positions_bohr).reshape(3, 3, nao, nao, n)
        ipvip = self._intor("int3c2e_ipvip1", positions_bohr).reshape(3, 3, nao, nao, n)
        return ipip, ipvip

    def hessian(self, positions_bohr) -> np.ndarray:
        """``∂²V_SAP_μν/∂R_Ax ∂R_By`` (A, 3, A, 3, nao, nao), Eh/Bohr², symmetric in
        (A, x) ↔ (B, y). 8 (3A)² nao² bytes: for large molecules use
        :meth:`weighted_hessian`."""
        ipip, ipvip = self._second(positions_bohr)
        m = self._relative
        half = -(np.einsum("mca,mcb,xymnc->axbymn", m, m, ipip, optimize=True)
                 + np.einsum("mca,ncb,xymnc->axbymn", m, m, ipvip, optimize=True))
        return half + half.transpose(0, 1, 2, 3, 5, 4)

    def weighted_hessian(self, positions_bohr, weights) -> np.ndarray:
        """``Σ_μν W_μν ∂²V_SAP_μν/∂R_Ax ∂R_By`` (A, 3, A, 3), Eh/Bohr² per unit W, for
        weights W (nao, nao), without holding the whole :meth:`hessian`."""
        ipip, ipvip = self._second(positions_bohr)
        m = self._relative
        symmetric = weights + weights.T  # the (μ ↔ ν) half
        same = np.einsum("mn,xymnc->xymc", symmetric, ipip)
        both = np.einsum("mn,xymnc,ncb->xymcb", symmetric, ipvip, m, optimize=True)
        return -(np.einsum("mca,mcb,xymc->axby", m, m, same, optimize=True)
                 + np.einsum("mca,xymcb->axby", m, both, optimize=True))

    def value(self, positions_bohr) -> np.ndarray:
        """:class:`~ase_phisnet.core.integrals.ExactIntegrals`'s matrix."""
        return self.sap_potential(positions_bohr)


def exact_sap(integrals: SAPIntegrals, positions_bohr: torch.Tensor,
              twice_differentiable: bool = True) -> torch.Tensor:
    """V_SAP (..., nao, nao), Eh, at ``positions_bohr`` ((A, 3) or (B, A, 3), Bohr), as a
    differentiable tensor: exact forces through the first derivative, exact Hessians through a
    second backward.

    With ``twice_differentiable=False`` dV_SAP/dR stays exact and differentiable in whatever
    multiplies it (force training), but is constant in R: a second derivative in R through it
    silently misses the d²V_SAP/dR² terms (see
    :func:`~ase_phisnet.core.integrals.exact_overlap`). Cost per geometry, ethanol in
    def2-SVP on one core (benchmarks/sap_baselines.py): value 3.8 ms and first derivative
    13.6 ms with ``sapcompact``, 6.8 and 26.4 ms with ``sapgrasplarge`` (PySCF's ``make_sap``
    ~9 ms for the value); the second derivative (the weighted Hessian, once per backward
    graph) 63 ms with ``sapgrasplarge``.
    """
    return exact_matrix(integrals, positions_bohr, twice_differentiable)
