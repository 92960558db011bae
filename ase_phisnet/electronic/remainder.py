r"""The learned remainder of the energy: what the electronic term misses of the total energy.

Atomic units (Eh). A remainder maps the matrix network's invariant atom features to an energy
per geometry, ``(B, A, F) -> (B,)``. :class:`AtomwiseRemainder` is

.. math::

    E_{rem} = \sum_i \big(e_{Z_i} + \phi(s_i)\big)

with ``e_Z`` an element constant and ``phi`` a small MLP of atom ``i``'s invariant features
``s_i``. A remainder is chosen by name (``ModelConfig.remainder``); a stronger one (message
passing of its own) is a new class here and a new entry of :data:`REMAINDERS`.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

RemainderName = Literal["atomwise"]
REMAINDERS: tuple[str, ...] = get_args(RemainderName)


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


def build_remainder(name: str, num_elements: int, num_features: int, hidden: int) -> nn.Module:
    """The remainder called ``name`` (one of :data:`REMAINDERS`)."""
    if name == "atomwise":
        return AtomwiseRemainder(num_elements, num_features, hidden)
    raise ValueError(f"remainder must be one of {REMAINDERS}, got {name!r}")
