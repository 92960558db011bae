r"""A short-range pair repulsion prior for the energy model: screened nuclear repulsion (ZBL).

Atomic units (Eh, Bohr). For the atom pair ``(i, j)`` at distance ``r``,

.. math::

    E_{ij}(r) = \frac{Z_i Z_j}{r}\, \phi\!\left(\frac{r}{a_{ij}}\right)
                f\!\left(\frac{r}{r_{c,ij}}\right),
    \qquad a_{ij} = \frac{0.88534}{Z_i^{0.23} + Z_j^{0.23}}

    \phi(x) = 0.18175 e^{-3.19980 x} + 0.50986 e^{-0.94229 x} + 0.28022 e^{-0.40290 x}
              + 0.02817 e^{-0.20162 x}

the universal screened Coulomb potential of Ziegler, Biersack and Littmark (*The Stopping and
Range of Ions in Solids*, 1985; ``phi(0) = 1``, so ``E_ij -> Z_i Z_j / r`` as ``r -> 0``), times
the switch

.. math::

    f(u) = 1 - 28 u^6 + 48 u^7 - 21 u^8 \quad (u < 1), \qquad f(u) = 0 \quad (u \ge 1)

which falls monotonically from 1 to 0 with ``f(1) = f'(1) = f''(1) = 0``, so energies, forces and
Hessians are continuous. ``r_c = s (R_i + R_j)``, a fraction ``s`` (``cutoff_scale``, default
0.75) of the sum of the two covalent radii (``ase.data.covalent_radii``, Cordero et al. 2008):
the prior acts only where a pair is much closer than a bond, the region where a learned energy has
no data and, without it, may have no wall (the band-structure energy model carries no nuclear
repulsion). A covalent radii sum is the length of a typical bond, so with ``s = 1`` every bond at
equilibrium sits at the switch's edge, where the prior's curvature grows from zero within a few
hundredths of an Ångström and the learned energy has to cancel it inside the data; ``s = 0.75``
puts ``r_c`` below the thermal and bond-stretched data (O–H 0.73 Å, C–H 0.80 Å, C–C 1.14 Å).
Files written before ``s`` was a setting used ``s = 1``. The molecule's prior is
``sum_{i<j} E_ij``.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from ase.data import covalent_radii
from ase.units import Bohr

PairRepulsionName = Literal["none", "zbl"]
PAIR_REPULSIONS: tuple[str, ...] = get_args(PairRepulsionName)

_ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
_ZBL_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)
_ZBL_SCREENING_BOHR = 0.88534  # (9 pi^2 / 128)^(1/3) a_0
_COVALENT_RADII_BOHR = torch.as_tensor(covalent_radii / Bohr)
#: ``s``: the prior's cutoff as a fraction of the covalent radii sum (module docstring).
DEFAULT_CUTOFF_SCALE = 0.75


def zbl_screening(x: torch.Tensor) -> torch.Tensor:
    """The universal screening function ``phi(x)`` (module docstring); ``phi(0) = 1``."""
    return sum(c * torch.exp(-k * x) for c, k in zip(_ZBL_COEFFICIENTS, _ZBL_EXPONENTS))


def pair_switch(u: torch.Tensor) -> torch.Tensor:
    """``f(u) = 1 - 28 u^6 + 48 u^7 - 21 u^8`` below 1, else 0; C2 at ``u = 1``."""
    u = u.clamp(max=1.0)
    u6 = u**6
    return 1.0 - 28.0 * u6 + 48.0 * u6 * u - 21.0 * u6 * u * u


def covalent_radius_sum_bohr(z_i: torch.Tensor, z_j: torch.Tensor) -> torch.Tensor:
    """``r_c``: sum of the two atoms' covalent radii (ASE's table), Bohr."""
    radii = _COVALENT_RADII_BOHR.to(z_i.device)
    return radii[z_i] + radii[z_j]


def zbl_pair_energy_eh(z_i: torch.Tensor, z_j: torch.Tensor, distance_bohr: torch.Tensor,
                       cutoff_scale: float = DEFAULT_CUTOFF_SCALE) -> torch.Tensor:
    """Switched ZBL repulsion ``E_ij`` (Eh) of pairs with atomic numbers ``z_i, z_j`` (long,
    broadcastable) at ``distance_bohr`` (module docstring); zero at and beyond
    ``r_c = cutoff_scale * (R_i + R_j)``."""
    zi, zj = z_i.to(distance_bohr.dtype), z_j.to(distance_bohr.dtype)
    screening_length = _ZBL_SCREENING_BOHR / (zi**0.23 + zj**0.23)
    cutoff = cutoff_scale * covalent_radius_sum_bohr(z_i, z_j).to(distance_bohr.dtype)
    inside = distance_bohr < cutoff
    # Pairs beyond r_c get a harmless distance, so no inf/nan reaches the gradient.
    r = torch.where(inside, distance_bohr, cutoff)
    energy = zi * zj / r * zbl_screening(r / screening_length) * pair_switch(r / cutoff)
    return torch.where(inside, energy, torch.zeros_like(energy))


def zbl_repulsion_eh(atomic_numbers: torch.Tensor, positions_bohr: torch.Tensor,
                     cutoff_scale: float = DEFAULT_CUTOFF_SCALE) -> torch.Tensor:
    """``sum_{i<j} E_ij`` (Eh) of one geometry ``(A, 3)`` or a batch ``(B, A, 3)``."""
    i, j = torch.triu_indices(len(atomic_numbers), len(atomic_numbers), offset=1,
                              device=positions_bohr.device)
    distances = (positions_bohr[..., j, :] - positions_bohr[..., i, :]).norm(dim=-1)
    z = atomic_numbers.to(positions_bohr.device)
    return zbl_pair_energy_eh(z[i], z[j], distances, cutoff_scale).sum(-1)


def pair_repulsion_eh(name: str, z_src: torch.Tensor, z_dst: torch.Tensor,
                      distance_bohr: torch.Tensor,
                      cutoff_scale: float = DEFAULT_CUTOFF_SCALE) -> torch.Tensor:
    """The prior ``name`` (one of :data:`PAIR_REPULSIONS`) summed over a list of ordered pairs
    in which every pair appears twice, ``(i, j)`` and ``(j, i)``: shape ``distance_bohr.shape[:-1]``
    (Eh)."""
    if name == "zbl":
        return 0.5 * zbl_pair_energy_eh(z_src, z_dst, distance_bohr, cutoff_scale).sum(-1)
    if name == "none":
        return distance_bohr.new_zeros(distance_bohr.shape[:-1])
    raise ValueError(f"pair_repulsion must be one of {PAIR_REPULSIONS}, got {name!r}")
