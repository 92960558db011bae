"""TraceGrad (Yin et al. 2024): invariant trace supervision and its gradient as features.

For equivariant features ``h`` (atom or pair), invariants ``s(h)`` are the scalar channels and the
squared norms ``|h_c|^2`` of every higher-degree channel. An unconstrained MLP maps them to a
prediction ``y`` of the block's trace invariant, supervised by ``|H_b|_F = sqrt(tr(H_b H_b^T))``
of the reference block. Because ``y`` is invariant, its gradient

.. math::

    g = \\partial y / \\partial h = \\sum_c \\frac{\\partial y}{\\partial |h_c|^2} \\, 2 h_c
        \\;(+\\; \\partial y / \\partial h_{\\text{scalar}})

transforms like ``h`` itself; ``h + W g`` (``W`` an equivariant linear) feeds the matrix heads, so
the non-linear invariant branch enriches the equivariant features while keeping exact
equivariance.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from ase_phisnet.nn.layers import equivariant_linear


def invariants(irreps: o3.Irreps, features: torch.Tensor) -> torch.Tensor:
    """Scalars as they are and squared norms of higher channels, shape ``(..., num_irreps)``.

    ``features`` m-major (:mod:`ase_phisnet.nn.layers`): per irrep type ``(2l+1, mul)``; the
    invariants are ordered by type, then channel.
    """
    parts = []
    for (mul, ir), chunk in zip(irreps, features.split([mul * ir.dim for mul, ir in irreps], -1)):
        chunk = chunk.reshape(*chunk.shape[:-1], ir.dim, mul)
        parts.append(chunk[..., 0, :] if ir.l == 0 else chunk.pow(2).sum(-2))
    return torch.cat(parts, dim=-1)


def _mlp(n_in: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, 1))


class TraceGrad(nn.Module):
    """Invariant trace branch for atom and pair features, and the gradient features it induces."""

    def __init__(self, irreps_atom: o3.Irreps, irreps_pair: o3.Irreps, hidden: int = 64):
        super().__init__()
        self.irreps_atom, self.irreps_pair = o3.Irreps(irreps_atom), o3.Irreps(irreps_pair)
        self.atom_mlp = _mlp(self.irreps_atom.num_irreps, hidden)
        self.pair_mlp = _mlp(self.irreps_pair.num_irreps, hidden)
        self.atom_back = o3.Linear(self.irreps_atom, self.irreps_atom)
        self.pair_back = o3.Linear(self.irreps_pair, self.irreps_pair)
        # Zero-initialized: training starts from the plain model and lets the gradient
        # features in gradually (their raw scale is arbitrary and first harmed the H heads).
        with torch.no_grad():
            self.atom_back.weight.zero_()
            self.pair_back.weight.zero_()

    def forward(self, atom, pair):
        """Features m-major (:mod:`ase_phisnet.nn.layers`). Returns
        ``(atom', pair', y_atom (A,), y_pair (P,))``.

        ``g`` is the total derivative: pair features depend on atom features, so the atom
        gradient includes the path through the pair invariants. ``PhiSNet`` runs this branch
        with the graph enabled even in inference so that training and inference agree.
        """
        with torch.enable_grad():
            if not atom.requires_grad:  # only a standalone call without parameters upstream
                atom = atom.detach().requires_grad_()
            if not pair.requires_grad:
                pair = pair.detach().requires_grad_()
            y_atom = self.atom_mlp(invariants(self.irreps_atom, atom)).squeeze(-1)
            y_pair = self.pair_mlp(invariants(self.irreps_pair, pair)).squeeze(-1)
            grad_atom, grad_pair = torch.autograd.grad(
                y_atom.sum() + y_pair.sum(), [atom, pair], create_graph=True)
        return (atom + equivariant_linear(self.atom_back, grad_atom),
                pair + equivariant_linear(self.pair_back, grad_pair), y_atom, y_pair)
