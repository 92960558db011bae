"""Equivariant building blocks of the network (e3nn), each with its defining equation.

Shapes use ``A`` atoms, ``E`` directed edges, ``F`` radial basis functions. Distances are in Bohr.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from e3nn import nn as e3nn_nn
from e3nn import o3
from torch import nn


def smooth_cutoff(distance_bohr: torch.Tensor, cutoff_bohr: float) -> torch.Tensor:
    """Envelope ``f(r) = (1 - (r/r_c)^2)^3`` for ``r < r_c``, else 0; C2-smooth at ``r_c``.

    >>> float(smooth_cutoff(torch.tensor(0.0), 5.0))
    1.0
    """
    x = (distance_bohr / cutoff_bohr).clamp(max=1.0)
    return (1.0 - x * x) ** 3


class BesselRadialBasis(nn.Module):
    """``e_n(r) = sqrt(2/r_c) sin(n pi r / r_c) / r * f(r)``, ``n = 1..F``, shape ``(E, F)``.

    The sine frequencies are trainable (initialized at ``n pi / r_c``); ``f`` is
    :func:`smooth_cutoff`, so every feature and its derivative vanish at the cutoff.
    """

    def __init__(self, num_basis: int, cutoff_bohr: float):
        super().__init__()
        self.cutoff_bohr = float(cutoff_bohr)
        self.frequencies = nn.Parameter(torch.arange(1, num_basis + 1) * math.pi / cutoff_bohr)

    def forward(self, distance_bohr: torch.Tensor) -> torch.Tensor:
        r = distance_bohr.unsqueeze(-1)
        prefactor = math.sqrt(2.0 / self.cutoff_bohr)
        # sin(w r) / r, written to stay finite (-> w) as r -> 0
        values = prefactor * torch.sinc(self.frequencies * r / math.pi) * self.frequencies
        return values * smooth_cutoff(r, self.cutoff_bohr)


def scatter_sum(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``out[..., a, :] = sum_{e: index[e] = a} values[..., e, :]`` for ``values (..., E, F)``.

    A one-hot matmul shared by the batch: for molecules (tens of atoms) it is faster on CPU
    than ``index_add``, in particular in the backward pass.
    """
    one_hot = (index.unsqueeze(0) == torch.arange(size, device=index.device).unsqueeze(1))
    return torch.matmul(one_hot.to(values.dtype), values)


class DepthwiseTensorProduct(nn.Module):
    """Depthwise (``uvu``) tensor product of features with edge spherical harmonics.

    For every input block ``(U, l1)``, every harmonic degree ``l2`` and every allowed output
    ``L`` (``|l1-l2| <= L <= l1+l2``, parity ``(-1)^(l1+l2)``, ``L`` in ``allowed_ls``):

    .. math::

        z^{(l_1 l_2 L)}_{e u M} = w_{e u}^{(l_1 l_2 L)} \sqrt{2L+1}
            \sum_{m_1 m_2} C^{l_1 l_2 L}_{m_1 m_2 M} x_{e u m_1} Y^{l_2}_{e m_2}

    Each input block costs one contraction against a precomputed Clebsch–Gordan table for all
    its paths at once. The tables are built by ``e3nn.o3.wigner_3j`` in float64 and cast per
    dtype: e3nn's own ``TensorProduct`` bakes them in torch's default dtype (float32), which
    breaks float64 equivariance at the 1e-8 level.

    Shapes: ``x (E, irreps_in.dim)``, ``sh (E, irreps_sh.dim)``, ``weights (E, weight_numel)``
    -> ``(E, irreps_out.dim)``; ``irreps_out`` stacks the paths of equal ``(L, p)`` as channels.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, allowed_ls):
        super().__init__()
        self.irreps_in, self.irreps_sh = o3.Irreps(irreps_in), o3.Irreps(irreps_sh)
        sh_offsets = np.cumsum([0] + [ir.dim for _, ir in self.irreps_sh])
        irreps_out, self._tables64, self._path_slices = [], [], []
        weight_start = 0
        for mul, ir_in in self.irreps_in:
            columns, weight_index = [], []
            for i_sh, (_, ir_sh) in enumerate(self.irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out.l not in allowed_ls:
                        continue
                    cg = o3.wigner_3j(ir_in.l, ir_sh.l, ir_out.l, dtype=torch.float64)
                    table = torch.zeros(ir_in.dim, self.irreps_sh.dim, ir_out.dim,
                                        dtype=torch.float64)
                    table[:, sh_offsets[i_sh] : sh_offsets[i_sh + 1]] = cg * math.sqrt(ir_out.dim)
                    columns.append(table)
                    weight_index += [len(irreps_out)] * ir_out.dim
                    irreps_out.append((mul, ir_out))
            self._tables64.append(torch.cat(columns, dim=-1))  # (2l1+1, sh, K)
            local_index = torch.tensor(weight_index) - weight_start
            self._path_slices.append((weight_start, len(irreps_out), local_index))
            weight_start = len(irreps_out)
        self._path_irreps = o3.Irreps(irreps_out)
        # Output grouped by irrep (all paths giving the same (L, p) stacked as channels), so the
        # linear that follows has one instruction per irrep type instead of one per path.
        self._output_irs = sorted({ir for _, ir in self._path_irreps}, key=lambda ir: (ir.l, ir.p))
        self.irreps_out = o3.Irreps([
            (sum(mul for mul, ir in self._path_irreps if ir == target), target)
            for target in self._output_irs])
        # Position of every output component in the blocks' results flattened one after the
        # other, each block (U, K) channel-major: one index_select reorders all paths at once.
        block_offset, path_columns = 0, {ir: [] for ir in self._output_irs}
        for (mul, _), (first, last, _) in zip(self.irreps_in, self._path_slices):
            k_total = sum(ir.dim for _, ir in self._path_irreps[first:last])
            k_start = 0
            for _, ir_out in self._path_irreps[first:last]:
                columns = (block_offset + np.arange(mul)[:, None] * k_total
                           + k_start + np.arange(ir_out.dim)[None, :])  # (U, 2L+1)
                path_columns[ir_out].append(columns)
                k_start += ir_out.dim
            block_offset += mul * k_total
        self._output_order = torch.as_tensor(np.concatenate(
            [np.concatenate(path_columns[ir], axis=0).ravel() for ir in self._output_irs]))
        self._cache = {}

    @property
    def weight_numel(self) -> int:
        """One weight per path and channel."""
        return sum(mul for mul, _ in self._path_irreps)

    def _tables(self, like):
        key = (like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = [t.to(like.dtype).to(like.device) for t in self._tables64]
            self._cache[(*key, "paths")] = [(first, last, index.to(like.device))
                                         for first, last, index in self._path_slices]
            self._cache[(*key, "order")] = self._output_order.to(like.device)
        return self._cache[key]

    def forward(self, x, sh, weights):
        leading = x.shape[:-1]
        x, sh, weights = (t.reshape(-1, t.shape[-1]) for t in (x, sh, weights))
        outputs, weight_offset = [], 0
        blocks = x.split([mul * ir.dim for mul, ir in self.irreps_in], dim=-1)
        tables = self._tables(x)
        for (mul, ir), block, table, (first, last, component_path) in zip(
            self.irreps_in, blocks, tables, self._cache[x.dtype, x.device, "paths"]
        ):
            block = block.reshape(-1, mul, ir.dim)  # (E, U, 2l1+1)
            coupled = torch.einsum("ej,ijk->eik", sh, table)  # (E, 2l1+1, K)
            z = torch.bmm(block, coupled)  # (E, U, K)
            n_paths = last - first
            w = weights[:, weight_offset : weight_offset + mul * n_paths].reshape(-1, n_paths, mul)
            weight_offset += mul * n_paths
            z = z * w.index_select(1, component_path).transpose(1, 2)  # (E, U, K)
            outputs.append(z.reshape(z.shape[0], -1))
        # e3nn layout: per irrep type, channels stacked, each (channels, 2L+1) channel-major
        order = self._cache[(x.dtype, x.device, "order")]
        return torch.cat(outputs, dim=-1).index_select(1, order).reshape(*leading, -1)


def gated_irreps(irreps_hidden: o3.Irreps) -> tuple[o3.Irreps, o3.Irreps, o3.Irreps]:
    """Split ``irreps_hidden`` into ``(scalars, gates, gated)`` for :class:`e3nn.nn.Gate`."""
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l == 0])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l > 0])
    gates = o3.Irreps([(mul, "0e") for mul, _ in gated])
    return scalars, gates, gated


class Interaction(nn.Module):
    """One equivariant message-passing layer with depthwise (``uvu``) tensor products.

    .. math::

        m_i = \\frac{1}{\\sqrt{\\bar n}} \\sum_{j} W(r_{ij}) \\cdot
              \\big(W_1 x_j \\otimes_{uvu} Y(\\hat r_{ij})\\big), \\qquad
        x_i' = x_i + \\mathrm{Gate}(W_2 m_i + W_3 x_i)

    ``W(r)`` is an MLP of the radial basis giving one weight per path and channel. A depthwise
    product couples each channel with the edge's spherical harmonics only (no channel mixing),
    which costs ``O(C)`` instead of ``O(C^2)`` per path; channel mixing happens in the linears.

    Shapes: ``x (B, A, irreps_hidden.dim)``, ``edge_sh (B, E, irreps_sh.dim)``,
    ``edge_radial (B, E, F)``; ``edge_src, edge_dst (E,)`` shared by the batch.
    """

    def __init__(self, irreps_hidden: o3.Irreps, irreps_sh: o3.Irreps, num_radial: int,
                 radial_hidden: int, avg_neighbors: float):
        super().__init__()
        self.irreps_hidden = o3.Irreps(irreps_hidden)
        self.avg_neighbors = float(avg_neighbors)
        self.linear_in = o3.Linear(self.irreps_hidden, self.irreps_hidden)
        self.tensor_product = DepthwiseTensorProduct(
            self.irreps_hidden, irreps_sh, allowed_ls=self.irreps_hidden.ls)
        self.irreps_mid = self.tensor_product.irreps_out
        self.radial_weights = e3nn_nn.FullyConnectedNet(
            [num_radial, radial_hidden, self.tensor_product.weight_numel], torch.nn.functional.silu
        )
        scalars, gates, gated = gated_irreps(self.irreps_hidden)
        self.gate = e3nn_nn.Gate(
            scalars, [torch.nn.functional.silu] * len(scalars),
            gates, [torch.sigmoid] * len(gates), gated,
        )
        self.linear_message = o3.Linear(self.irreps_mid, self.gate.irreps_in)
        self.linear_self = o3.Linear(self.irreps_hidden, self.gate.irreps_in)

    def forward(self, x, edge_src, edge_dst, edge_sh, edge_radial):
        messages = self.tensor_product(  # (E, irreps_mid.dim)
            self.linear_in(x).index_select(-2, edge_src), edge_sh, self.radial_weights(edge_radial)
        )
        aggregated = scatter_sum(messages, edge_dst, x.shape[-2]) / math.sqrt(self.avg_neighbors)
        update = self.gate(self.linear_message(aggregated) + self.linear_self(x))
        return x + update
