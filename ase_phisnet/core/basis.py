"""Atomic-orbital basis layout and the convention that links PySCF to e3nn.

The outside world (PySCF, the calculator's results) sees matrices in **PySCF's AO order**: atom by
atom, shell by shell in the order of ``mol._bas``, the contractions of one shell entry one after
the other, and within a shell PySCF's order of the real spherical components (``p`` is
``(x, y, z)``; for ``l >= 2`` it is ``m = -l .. l`` in libcint's real solid harmonics, polar axis
``z``).

The network works with e3nn irreps, whose real spherical harmonics for ``l >= 2`` have ``y`` as
their polar axis. For every ``l`` there is one orthogonal matrix ``Q_l`` with

    phi_pyscf(r) = Q_l @ Y_e3nn(r) * radial(r)        (column vectors of the 2l+1 components)

so that a matrix block transforms as ``H_pyscf = Q H_e3nn Q^T``. ``Q_l`` is *derived*, not
tabulated: both families of functions are evaluated on the same points and ``Q_l`` is solved for
by least squares, then checked to be orthogonal (see :func:`pyscf_from_e3nn`).

A rigid rotation ``R`` of the molecule maps the AO matrices as

    H(R x) = D(R) H(x) D(R)^T,   D(R) = blockdiag_shells( Q_l D^l_e3nn(R) Q_l^T )

(:meth:`BasisLayout.wigner_D`, with e3nn's D^l built in float64 by :mod:`ase_phisnet.core.so3`),
which ``tests/core/test_basis.py`` checks against PySCF on rotated molecules.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from ase.data import atomic_numbers as ATOMIC_NUMBER_OF_SYMBOL
from ase.data import chemical_symbols
from e3nn import o3

from ase_phisnet.core.errors import UnsupportedElementError
from ase_phisnet.core.so3 import wigner_D

#: Highest angular momentum whose change of basis is derived and tested.
MAX_SUPPORTED_L = 4


@dataclass(frozen=True)
class Shell:
    """One contracted shell of an element's basis.

    Attributes:
        l: Angular momentum quantum number.
        n_primitives: Number of primitive Gaussians in the contraction.
    """

    l: int
    n_primitives: int

    @property
    def n_functions(self) -> int:
        """Number of real spherical AOs in the shell, ``2l + 1``."""
        return 2 * self.l + 1


@dataclass(frozen=True)
class ElementBasis:
    """The shells of one element in one basis, in PySCF's AO order."""

    atomic_number: int
    shells: tuple[Shell, ...]

    @property
    def symbol(self) -> str:
        return chemical_symbols[self.atomic_number]

    @property
    def nao(self) -> int:
        """Number of spherical AOs on one atom of this element."""
        return sum(shell.n_functions for shell in self.shells)

    @property
    def irreps(self) -> o3.Irreps:
        """The AOs as e3nn irreps in shell order, parity ``(-1)^l`` (e.g. ``1x0e+1x0e+1x1o``)."""
        return o3.Irreps([(1, (shell.l, (-1) ** shell.l)) for shell in self.shells])

    @property
    def max_l(self) -> int:
        return max(shell.l for shell in self.shells)


@functools.lru_cache(maxsize=None)
def _element_shells(basis: str, atomic_number: int) -> tuple[Shell, ...]:
    """Read the shells of one element from PySCF; raise if the basis does not cover it."""
    from pyscf import gto

    symbol = chemical_symbols[atomic_number]
    try:
        mol = gto.M(
            atom=[[symbol, (0.0, 0.0, 0.0)]],
            basis=basis,
            spin=atomic_number % 2,
            cart=False,
            verbose=0,
        )
    except Exception as error:  # PySCF raises KeyError/RuntimeError/BasisNotFoundError
        raise UnsupportedElementError(
            f"basis {basis!r} does not define element {symbol} (Z={atomic_number}): {error}"
        ) from error
    if mol.nbas == 0:
        raise UnsupportedElementError(f"basis {basis!r} does not define element {symbol}")
    shells = []
    for index in range(mol.nbas):
        l = int(mol.bas_angular(index))
        if l > MAX_SUPPORTED_L:
            raise UnsupportedElementError(
                f"basis {basis!r} gives {symbol} a shell with l={l}; "
                f"ase_phisnet supports l <= {MAX_SUPPORTED_L}"
            )
        # A general contraction (nctr > 1) gives nctr consecutive shells of the same l.
        shells += [Shell(l, int(mol.bas_nprim(index)))] * int(mol.bas_nctr(index))
    return tuple(shells)


def _as_atomic_number(element: int | str) -> int:
    if isinstance(element, str):
        if element not in ATOMIC_NUMBER_OF_SYMBOL:
            raise UnsupportedElementError(f"unknown chemical symbol {element!r}")
        return ATOMIC_NUMBER_OF_SYMBOL[element]
    return int(element)


class BasisLayout:
    """Shells, AO slices, irreps and rotation matrices of one basis over a set of elements.

    Example:
        >>> layout = BasisLayout("def2-svp", ["H", "O"])
        >>> layout.nao([8, 1, 1])
        24
        >>> str(layout.elements[1].irreps)
        '1x0e+1x0e+1x1o'
    """

    def __init__(self, basis: str, elements: list[int | str] | tuple[int | str, ...]):
        self.basis = basis
        numbers = sorted({_as_atomic_number(e) for e in elements})
        if not numbers:
            raise ValueError("BasisLayout needs at least one element")
        self.elements: dict[int, ElementBasis] = {
            z: ElementBasis(z, _element_shells(basis, z)) for z in numbers
        }

    def __repr__(self) -> str:
        symbols = ",".join(chemical_symbols[z] for z in self.elements)
        return f"BasisLayout(basis={self.basis!r}, elements=[{symbols}])"

    @property
    def max_l(self) -> int:
        return max(element.max_l for element in self.elements.values())

    def element(self, atomic_number: int) -> ElementBasis:
        try:
            return self.elements[int(atomic_number)]
        except KeyError:
            known = ", ".join(chemical_symbols[z] for z in self.elements)
            raise UnsupportedElementError(
                f"element {chemical_symbols[int(atomic_number)]} is not in this layout "
                f"(basis {self.basis!r}, elements: {known})"
            ) from None

    def nao(self, atomic_numbers) -> int:
        """Total number of spherical AOs of a molecule; equals PySCF's ``mol.nao``."""
        return sum(self.element(z).nao for z in atomic_numbers)

    def ao_slices(self, atomic_numbers) -> list[slice]:
        """Each atom's slice of AO indices in PySCF's AO order."""
        slices, start = [], 0
        for z in atomic_numbers:
            stop = start + self.element(z).nao
            slices.append(slice(start, stop))
            start = stop
        return slices

    def shell_ls(self, atomic_numbers) -> list[int]:
        """Angular momentum of every shell of the molecule, in AO order."""
        return [shell.l for z in atomic_numbers for shell in self.element(z).shells]

    def change_of_basis(self, atomic_numbers, dtype=torch.float64) -> torch.Tensor:
        """Block-diagonal orthogonal ``Q`` of shape ``(nao, nao)`` with
        ``H_pyscf = Q H_e3nn Q^T``."""
        blocks = [pyscf_from_e3nn(l, dtype) for l in self.shell_ls(atomic_numbers)]
        return torch.block_diag(*blocks)

    def wigner_D(self, atomic_numbers, rotation: torch.Tensor) -> torch.Tensor:
        """AO rotation matrix ``D(R)`` of shape ``(nao, nao)`` in PySCF's AO order.

        For a proper rotation ``R`` (3x3, acting on Cartesian column vectors) and a molecule
        rotated as ``x -> R x``, every AO matrix transforms as ``H -> D H D^T``.
        """
        rotation = torch.as_tensor(rotation)
        if abs(float(torch.det(rotation)) - 1.0) > 1e-8:
            raise ValueError("wigner_D needs a proper rotation (det R = +1)")
        blocks = []
        for l in self.shell_ls(atomic_numbers):
            q = pyscf_from_e3nn(l, rotation.dtype).to(rotation.device)
            d = wigner_D(l, rotation)
            blocks.append(q @ d @ q.T)
        return torch.block_diag(*blocks)


def _pyscf_angular_values(l: int, points: np.ndarray) -> np.ndarray:
    """PySCF's real spherical AOs of one unit-exponent shell at the origin, shape (n, 2l+1)."""
    from pyscf import gto

    mol = gto.M(
        atom=[["H", (0.0, 0.0, 0.0)]],
        basis={"H": [[l, [1.0, 1.0]]]},
        spin=1,
        cart=False,
        unit="Bohr",
        verbose=0,
    )
    return mol.eval_gto("GTOval_sph", points)


@functools.lru_cache(maxsize=None)
def _pyscf_from_e3nn_numpy(l: int) -> np.ndarray:
    if not 0 <= l <= MAX_SUPPORTED_L:
        raise ValueError(f"change of basis is derived for 0 <= l <= {MAX_SUPPORTED_L}, got {l}")
    rng = np.random.default_rng(20211206 + l)
    points = rng.normal(size=(64 * (2 * l + 1), 3))
    # Both sides share the radial factor r^l exp(-r^2); divide it out through e3nn's
    # unnormalized (solid) harmonics so only the angular change of basis remains.
    pyscf_values = _pyscf_angular_values(l, points)
    solid = o3.spherical_harmonics(
        l, torch.from_numpy(points), normalize=False, normalization="component"
    ).numpy()
    radial = np.exp(-np.sum(points**2, axis=1))[:, None]
    # pyscf_values = (solid * radial) @ M  ->  M = lstsq
    m, residuals, *_ = np.linalg.lstsq(solid * radial, pyscf_values, rcond=None)
    fit_error = np.abs((solid * radial) @ m - pyscf_values).max()
    scale = np.sqrt(np.mean(np.sum(m**2, axis=0)))
    q = (m / scale).T  # column-vector convention: phi_pyscf = Q Y_e3nn
    if fit_error > 1e-10 * np.abs(pyscf_values).max() or not np.allclose(
        q @ q.T, np.eye(2 * l + 1), atol=1e-10
    ):
        raise RuntimeError(f"PySCF and e3nn harmonics of l={l} are not related by a rotation")
    # Snap the exact entries (0 and +-1) that least squares leaves ~1e-16 away.
    q[np.abs(q) < 1e-12] = 0.0
    q[np.abs(np.abs(q) - 1.0) < 1e-12] = np.sign(q[np.abs(np.abs(q) - 1.0) < 1e-12])
    return q


def pyscf_from_e3nn(l: int, dtype=torch.float64) -> torch.Tensor:
    """Orthogonal ``Q_l`` of shape ``(2l+1, 2l+1)``: ``phi_pyscf = Q_l Y_e3nn`` for one shell.

    Derived numerically (least squares of PySCF's AO values on e3nn's solid harmonics at random
    points, then normalized); exact to ~1e-15. ``Q_0 = [[1]]`` and ``Q_1 = I`` (both use
    ``(x, y, z)``); for ``l >= 2`` it is a real rotation of the polar axis from ``y`` to ``z``
    combined with sign conventions, not a permutation.
    """
    return torch.from_numpy(_pyscf_from_e3nn_numpy(l).copy()).to(dtype)
