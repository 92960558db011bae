r"""The learned remainder of the energy: what the electronic term misses of the total energy.

Atomic units (Eh, Bohr). A remainder is chosen by name (``ModelConfig.remainder``):

``"atomwise"`` (:class:`AtomwiseRemainder`): the matrix network's invariant atom features
``s_i`` through a small MLP,

.. math::

    E_{rem} = \sum_i \big(e_{Z_i} + \phi(s_i)\big);

it shares the matrix network, so training the energy through it moves the matrices.

``"message_passing"`` (:class:`MessagePassingRemainder`): a many-body network of its own
(:class:`~ase_phisnet.nn.painn.PaiNN`) on the geometry and, optionally, the electronic
structure's invariant atom features ``x_i``
(:func:`~ase_phisnet.electronic.features.electronic_atom_features`),

.. math::

    E_{rem} = \sum_i \big(e_{Z_i} + s\, \mathrm{PaiNN}_i(Z, R, \tilde x)\big),
    \qquad \tilde x_{i,k} = (x_{i,k} - \mu_{Z_i,k}) / \sigma_{Z_i,k}

with the features standardized per element and the output in units of an energy scale ``s``
(Eh); ``mu``, ``sigma`` and ``s`` are set from the training data
(:meth:`MessagePassingRemainder.set_statistics`) and saved with the weights. The energy stage
takes ``s`` as the RMS residual force times one Bohr (``sigma_F · a_0``): the network learns
mostly from forces, whose residuals then come out of it at unit size. It is an MLIP of
its own, so the matrices can stay frozen while it learns the energy.

The standardized features are bounded before they enter the network. Each element's feature
``k`` keeps its value on ``[l, u]``, its training range widened by :data:`FEATURE_MARGIN_STD`
training standard deviations on each side, and saturates smoothly beyond it
(:func:`soft_clip`, width ``w =`` :data:`FEATURE_SATURATION_WIDTH_STD`):

.. math::

    \mathrm{clip}(z) = \min(\max(z, l), u) + w \tanh(a / w) - w \tanh(b / w), \qquad
    a = \max(z - u, 0), \quad b = \max(l - z, 0)

which is the identity inside the range and twice continuously differentiable everywhere
(``tanh`` has slope 1 and curvature 0 at 0), so forces and Hessians stay exact, and which never
leaves ``[l - w, u + w]``. A geometry whose electronic structure lies far outside the training
data (a spurious near-degenerate level at a compressed bond shifts a band-energy share by many
spreads) then gives the network an input it has seen the edge of, not one it extrapolates to
without bound; :meth:`MessagePassingRemainder.feature_excursions` says when that happens.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from ase_phisnet.nn.painn import DEFAULT_NORM_EPS, PaiNN

RemainderName = Literal["atomwise", "message_passing"]
REMAINDERS: tuple[str, ...] = get_args(RemainderName)
#: Training standard deviations by which a feature's identity range extends its training range.
FEATURE_MARGIN_STD = 1.0
#: Width, in training standard deviations, over which a feature saturates beyond that range.
FEATURE_SATURATION_WIDTH_STD = 1.0


def soft_clip(values: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
              width: float) -> torch.Tensor:
    """``values`` unchanged on ``[lower, upper]``, saturating smoothly to ``upper + width``
    above and ``lower - width`` below (module docstring); bounds broadcast against ``values``
    and may be infinite (no bound)."""
    lower, upper = torch.broadcast_tensors(lower, upper, values)[:2]
    # Selected, not subtracted: exact far outside, and slope 1 (not 2) exactly at a bound.
    above = torch.where(values > upper, values - upper, 0.0)
    below = torch.where(values < lower, lower - values, 0.0)
    inside = torch.where(values > upper, upper, torch.where(values < lower, lower, values))
    return inside + width * torch.tanh(above / width) - width * torch.tanh(below / width)


class AtomwiseRemainder(nn.Module):
    """``E = sum_i [e_Z(i) + MLP(s_i)]`` in Eh.

    Args:
        num_elements: Element constants ``e_Z``, indexed by the network's species index.
        num_features: Width ``F`` of the invariant atom features.
        hidden: Hidden width of the MLP.
    """

    def __init__(self, num_elements: int, num_features: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(num_features, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.element_energy_eh = nn.Parameter(torch.zeros(num_elements))

    def forward(self, species: torch.Tensor, atom_scalars: torch.Tensor) -> torch.Tensor:
        """``species (A,)`` long, ``atom_scalars ([B,] A, F)``; returns ``([B,])`` Eh."""
        return (self.mlp(atom_scalars).squeeze(-1) + self.element_energy_eh[species]).sum(-1)


def element_energy_offsets_eh(species, num_elements: int, residual_eh) -> np.ndarray:
    """Least-squares per-element constants ``c (num_elements,)`` Eh with
    ``sum_i c[species_i] ≈ residual_n`` over geometries ``n`` of one molecule
    (``species (A,)`` its atoms' species indices, ``residual_eh (N,)``).

    All geometries share one composition, so only the count-weighted sum of ``c`` is
    determined; the minimum-norm solution spreads the mean residual over the elements in
    proportion to their counts. A constant leaves the forces unchanged.
    """
    counts = np.bincount(np.asarray(species), minlength=num_elements).astype(float)
    residual = np.asarray(residual_eh, dtype=float)
    offsets, *_ = np.linalg.lstsq(np.tile(counts, (len(residual), 1)), residual, rcond=None)
    return offsets


class MessagePassingRemainder(nn.Module):
    """``E = sum_i [e_Z(i) + s PaiNN_i]`` in Eh (module docstring).

    Args:
        num_elements: Element constants and embeddings, indexed by the network's species index.
        num_features: Width of the electronic input features (0: the geometry alone, a plain
            MLIP).
        channels, num_layers, num_radial, cutoff_bohr, norm_eps: Of the :class:`PaiNN`.
    """

    def __init__(self, num_elements: int, num_features: int, channels: int, num_layers: int,
                 num_radial: int, cutoff_bohr: float, norm_eps: float = DEFAULT_NORM_EPS):
        super().__init__()
        self.num_features = num_features
        self.painn = PaiNN(num_elements, num_features, channels, num_layers, num_radial,
                           cutoff_bohr, norm_eps)
        self.element_energy_eh = nn.Parameter(torch.zeros(num_elements))
        self.register_buffer("feature_mean", torch.zeros(num_elements, num_features))
        self.register_buffer("feature_std", torch.ones(num_elements, num_features))
        # Bounds of the standardized features (module docstring); infinite until trained.
        self.register_buffer("feature_lower",
                             torch.full((num_elements, num_features), -float("inf")))
        self.register_buffer("feature_upper",
                             torch.full((num_elements, num_features), float("inf")))
        self.register_buffer("energy_scale_eh", torch.ones(()))

    @torch.no_grad()
    def set_statistics(self, species: torch.Tensor, features: torch.Tensor | None,
                       energy_scale_eh: float) -> None:
        """Per-element mean, spread and bounds (module docstring) of ``features ((N, A, X),
        this molecule's training geometries)`` and the output scale ``energy_scale_eh``."""
        if energy_scale_eh <= 0:
            raise ValueError(f"energy_scale_eh must be positive, got {energy_scale_eh}")
        self.energy_scale_eh.fill_(float(energy_scale_eh))
        if not self.num_features:
            return
        for element in species.unique():
            values = features[:, species == element].reshape(-1, self.num_features)
            self.feature_mean[element] = values.mean(0).to(self.feature_mean.dtype)
            # A feature constant for an element (a shell it lacks) keeps unit spread.
            spread = values.std(0) if values.shape[0] > 1 else torch.zeros_like(values[0])
            self.feature_std[element] = torch.where(spread > 1e-8, spread,
                                                    torch.ones_like(spread)).to(
                                                        self.feature_std.dtype)
            standardized = (values - self.feature_mean[element]) / self.feature_std[element]
            self.feature_lower[element] = standardized.min(0).values - FEATURE_MARGIN_STD
            self.feature_upper[element] = standardized.max(0).values + FEATURE_MARGIN_STD

    def standardized_features(self, species: torch.Tensor,
                              features: torch.Tensor) -> torch.Tensor:
        """``([B,] A, X)``: ``features`` standardized per element, before bounding."""
        if features is None or features.shape[-1] != self.num_features:
            raise ValueError(f"this remainder needs ({self.num_features},) electronic "
                             "features per atom")
        return (features - self.feature_mean[species]) / self.feature_std[species]

    @torch.no_grad()
    def feature_excursions(self, species: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``([B,] A, X)``: how far each feature lies beyond the range the network takes as it
        is (``[l, u]`` of the module docstring), in training standard deviations; zero inside,
        positive where the network sees it saturated."""
        z = self.standardized_features(species, features.to(self.feature_mean.dtype))
        return torch.maximum((z - self.feature_upper[species]).clamp(min=0),
                             (self.feature_lower[species] - z).clamp(min=0))

    def forward(self, species: torch.Tensor, positions_bohr: torch.Tensor,
                features: torch.Tensor | None = None) -> torch.Tensor:
        """``species (A,)`` long, ``positions_bohr ([B,] A, 3)``, ``features ([B,] A, X)``
        (required when ``num_features > 0``); returns ``([B,])`` Eh."""
        if self.num_features:
            features = soft_clip(self.standardized_features(species, features),
                                 self.feature_lower[species], self.feature_upper[species],
                                 FEATURE_SATURATION_WIDTH_STD)
        per_atom = self.painn(species, positions_bohr, features)
        return (self.energy_scale_eh * per_atom + self.element_energy_eh[species]).sum(-1)


def build_remainder(name: str, num_elements: int, *, atom_features: int, hidden: int,
                    electronic_features: int, channels: int, num_layers: int, num_radial: int,
                    cutoff_bohr: float, norm_eps: float = DEFAULT_NORM_EPS) -> nn.Module:
    """The remainder called ``name`` (one of :data:`REMAINDERS`). ``atom_features`` and
    ``hidden`` are the atomwise remainder's (the matrix network's feature width, MLP width);
    the rest the message-passing remainder's (:class:`MessagePassingRemainder`)."""
    if name == "atomwise":
        return AtomwiseRemainder(num_elements, atom_features, hidden)
    if name == "message_passing":
        return MessagePassingRemainder(num_elements, electronic_features, channels, num_layers,
                                       num_radial, cutoff_bohr, norm_eps)
    raise ValueError(f"remainder must be one of {REMAINDERS}, got {name!r}")
