r"""A polarizable-atom interaction network (PaiNN; Schütt, Unke and Gastegger, ICML 2021):
the many-body message passing of the learned energy remainder.

Atomic units (Bohr). Each atom ``i`` carries ``F`` invariant channels ``s_i`` and ``F``
vector channels ``v_i`` (``3 x F``, odd under inversion, i.e. ``1o``), initialised as
``s_i = E[Z_i] + W_x x_i`` (element embedding plus a linear map of optional invariant input
features ``x_i``) and ``v_i = 0``. Each of ``num_layers`` interactions applies

.. math::

    (a_{ij}, b_{ij}, c_{ij}) &= \phi(s_j) \odot W(r_{ij})\, f_c(r_{ij}) \\
    s_i &\mathrel{+}= \textstyle\sum_{j \ne i} b_{ij}, \qquad
    v_i \mathrel{+}= \textstyle\sum_{j \ne i} a_{ij} \odot v_j + c_{ij}\, \hat r_{ij} \\
    (\alpha, \beta, \gamma) &= \psi(s_i, \lVert V v_i \rVert) \\
    v_i &\mathrel{+}= \alpha \odot U v_i, \qquad
    s_i \mathrel{+}= \beta \odot \langle U v_i, V v_i \rangle + \gamma

with ``phi``, ``psi`` two-layer SiLU perceptrons, ``W`` linear (no bias) in ``num_radial`` sine
radial functions ``sin(n pi r / r_c) / r``, ``f_c`` the cosine cutoff at ``r_c = cutoff_bohr``, and
``U``, ``V`` channel mixings of the vectors (no bias, so they stay equivariant). The output is
one invariant per atom from a perceptron of the final ``s_i``. Vectors only ever meet
``r_hat`` linearly and each other through scalar products or norms, so the per-atom outputs
are invariant under rotations, reflections and translations and permuted with the atoms.

All operations are smooth, so Hessians exist. The norm in ``psi`` is the soft norm
``sqrt(|V v|^2 + eps)``: ``|x|`` itself is not differentiable at ``x = 0``, where every atom
starts, and a tiny ``eps`` (1e-8) makes it smooth in name only, since its curvature then changes
on a scale of ``sqrt(eps)`` in the feature: on a trained water remainder the curvature of the
energy along a displacement varied by ~1 % within 0.004 Å, and finite-difference frequencies
scattered by tens of cm^-1. ``eps = 1e-2`` (the default) smooths on the scale the vector features
vary over; the same probe then shows no structure left below the anharmonic variation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: eps of the soft norm ``sqrt(|x|^2 + eps)`` of the vector features (module docstring)
DEFAULT_NORM_EPS = 1e-2


def _perceptron(width_in: int, hidden: int, width_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width_in, hidden), nn.SiLU(), nn.Linear(hidden, width_out))


def sine_radial_basis(distances_bohr: torch.Tensor, num_radial: int, cutoff_bohr: float):
    """``(..., num_radial)``: ``sin(n pi r / r_c) / r`` times the cosine cutoff
    ``(cos(pi r / r_c) + 1) / 2`` (zero with zero slope at ``r_c`` and beyond)."""
    n = torch.arange(1, num_radial + 1, dtype=distances_bohr.dtype, device=distances_bohr.device)
    r = distances_bohr.unsqueeze(-1)
    inside = (r < cutoff_bohr).to(r.dtype)
    envelope = 0.5 * (torch.cos(math.pi * r / cutoff_bohr) + 1.0) * inside
    return torch.sin(n * math.pi * r / cutoff_bohr) / r * envelope


class PaiNNInteraction(nn.Module):
    """One message and one update block (module docstring), ``F`` channels."""

    def __init__(self, channels: int, num_radial: int, norm_eps: float = DEFAULT_NORM_EPS):
        super().__init__()
        self.channels, self.norm_eps = channels, float(norm_eps)
        self.message = _perceptron(channels, channels, 3 * channels)
        # no bias: the radial functions carry the cutoff envelope, so W(r) = 0 beyond r_c
        self.radial = nn.Linear(num_radial, 3 * channels, bias=False)
        self.mix_u = nn.Linear(channels, channels, bias=False)
        self.mix_v = nn.Linear(channels, channels, bias=False)
        self.update = _perceptron(2 * channels, channels, 3 * channels)

    def forward(self, s, v, radial, unit, src, dst):
        """``s (B, A, F)``, ``v (B, A, 3, F)``, ``radial (B, P, R)``, ``unit (B, P, 3)`` from
        ``src`` to ``dst`` (the receiving atom); returns the updated ``(s, v)``."""
        f = self.channels
        x = self.message(s)[:, src] * self.radial(radial)  # (B, P, 3F)
        a, b, c = x[..., :f], x[..., f:2 * f], x[..., 2 * f:]
        dv = a.unsqueeze(-2) * v[:, src] + c.unsqueeze(-2) * unit.unsqueeze(-1)
        s = s.index_add(1, dst, b)
        v = v.index_add(1, dst, dv)

        uv, vv = self.mix_u(v), self.mix_v(v)
        norm = torch.sqrt((vv * vv).sum(-2) + self.norm_eps)
        y = self.update(torch.cat([s, norm], dim=-1))
        alpha, beta, gamma = y[..., :f], y[..., f:2 * f], y[..., 2 * f:]
        v = v + alpha.unsqueeze(-2) * uv
        s = s + beta * (uv * vv).sum(-2) + gamma
        return s, v


class PaiNN(nn.Module):
    """Per-atom invariant outputs of a molecule from its species, positions and optional
    invariant input features.

    Args:
        num_elements: Size of the element embedding (species indices ``0 .. num_elements-1``).
        num_input_features: Width of the input features ``x`` (0: none).
        channels: ``F``, scalar and vector channels per atom.
        num_layers: Interactions.
        num_radial: Radial functions.
        cutoff_bohr: Message cutoff ``r_c`` (Bohr).
        norm_eps: ``eps`` of the soft norm of the vector features (module docstring).
    """

    def __init__(self, num_elements: int, num_input_features: int, channels: int = 64,
                 num_layers: int = 3, num_radial: int = 16, cutoff_bohr: float = 9.0,
                 norm_eps: float = DEFAULT_NORM_EPS):
        super().__init__()
        if min(channels, num_layers, num_radial) < 1 or cutoff_bohr <= 0 or norm_eps <= 0:
            raise ValueError("PaiNN needs channels, num_layers, num_radial >= 1, a positive "
                             "cutoff_bohr and a positive norm_eps")
        self.num_radial, self.cutoff_bohr = num_radial, float(cutoff_bohr)
        self.embedding = nn.Embedding(num_elements, channels)
        self.input_map = (nn.Linear(num_input_features, channels, bias=False)
                          if num_input_features else None)
        self.interactions = nn.ModuleList(
            PaiNNInteraction(channels, num_radial, norm_eps) for _ in range(num_layers))
        self.readout = _perceptron(channels, channels, 1)

    def forward(self, species: torch.Tensor, positions_bohr: torch.Tensor,
                features: torch.Tensor | None = None) -> torch.Tensor:
        """``species (A,)`` long, ``positions_bohr ([B,] A, 3)``, ``features ([B,] A, X)``;
        returns ``([B,] A)`` per-atom outputs."""
        single = positions_bohr.dim() == 2
        positions = positions_bohr.unsqueeze(0) if single else positions_bohr
        batch, n_atoms = positions.shape[:2]
        src, dst = torch.where(~torch.eye(n_atoms, dtype=torch.bool, device=positions.device))
        vectors = positions[:, src] - positions[:, dst]  # from receiver dst towards src
        distances = torch.sqrt((vectors * vectors).sum(-1))
        unit = vectors / distances.unsqueeze(-1)
        radial = sine_radial_basis(distances, self.num_radial, self.cutoff_bohr)

        s = self.embedding(species).to(positions.dtype).expand(batch, -1, -1)
        if self.input_map is not None:
            if features is None:
                raise ValueError("this PaiNN was built with input features; pass features")
            x = features.unsqueeze(0) if features.dim() == 2 else features
            s = s + self.input_map(x.to(positions.dtype))
        v = positions.new_zeros(batch, n_atoms, 3, s.shape[-1])
        for interaction in self.interactions:
            s, v = interaction(s, v, radial, unit, src, dst)
        out = self.readout(s).squeeze(-1)
        return out[0] if single else out
