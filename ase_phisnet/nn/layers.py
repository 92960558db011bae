"""Equivariant building blocks of the network (e3nn), each with its defining equation.

Shapes use ``A`` atoms, ``E`` directed edges, ``F`` radial basis functions. Distances are in Bohr.

**Feature layout.** Inside the network a feature vector of irreps ``sum_t mul_t x (l_t, p_t)`` is
stored *m-major*: for each irrep type ``t`` in the order of the irreps, the block
``(2 l_t + 1, mul_t)`` row-major (component ``m`` outer, channel inner). e3nn stores the same
numbers channel-major (``(mul_t, 2 l_t + 1)``); :func:`mmajor_permutation` converts. The m-major
layout makes an equivariant linear map one plain matrix product per irrep type,
``y_t = x_t W_t`` with ``x_t`` viewed as ``(N (2l+1), mul_in)``, without the per-irrep slicing
and transposes of e3nn's generated code (whose backward zero-fills a full-size gradient per
slice). The parameters stay e3nn's: the ``o3.Linear`` and ``nn.Gate`` modules are kept (their
state-dict keys and weight layout define the model files) and only evaluated differently.
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


def mmajor_permutation(irreps: o3.Irreps) -> torch.Tensor:
    """Index ``perm`` with ``x_mmajor = x_e3nn[..., perm]`` (see the module docstring).

    >>> mmajor_permutation(o3.Irreps("1x0e + 2x1o")).tolist()
    [0, 1, 4, 2, 5, 3, 6]
    """
    parts, start = [], 0
    for mul, ir in o3.Irreps(irreps):
        parts.append(start + np.arange(mul * ir.dim).reshape(mul, ir.dim).T.ravel())
        start += mul * ir.dim
    return torch.as_tensor(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))


class _Constants:
    """Fixed float64 tables, cast once per (dtype, device) and cached (never in a state dict)."""

    def __init__(self, **tables):
        self._tables = tables
        self._cache = {}

    def get(self, name: str, like: torch.Tensor) -> torch.Tensor:
        key = (name, like.dtype, like.device)
        if key not in self._cache:
            table = self._tables[name]
            dtype = table.dtype if not table.is_floating_point() else like.dtype
            self._cache[key] = table.to(device=like.device, dtype=dtype)
        return self._cache[key]


class _LinearPlan:
    """How to evaluate an ``o3.Linear`` (no biases, shared weights) on m-major features.

    e3nn's linear is ``y_{t, v m} = sum_{ins: t_in -> t} a_ins sum_u W^{ins}_{u v} x_{t_in, u m}``
    with path weight ``a_ins`` (``1/sqrt(fan-in)``); here the weights are scaled by ``a_ins``
    once (one op on the flat weight vector) and each instruction is one ``mm``.
    """

    def __init__(self, linear: o3.Linear):
        if linear.bias_numel or not linear.shared_weights:
            raise ValueError("m-major evaluation supports shared-weight linears without biases")
        instructions = [ins for ins in linear.instructions if 0 not in ins.path_shape]
        self.irreps_in, self.irreps_out = linear.irreps_in, linear.irreps_out
        self.in_dims = [mul * ir.dim for mul, ir in linear.irreps_in]
        self.weight_sizes = [ins.path_shape[0] * ins.path_shape[1] for ins in instructions]
        self.terms = {i_out: [] for i_out in range(len(linear.irreps_out))}
        for k, ins in enumerate(instructions):
            self.terms[ins.i_out].append((k, ins.i_in, *ins.path_shape))
        scale = torch.cat([torch.full((size,), ins.path_weight, dtype=torch.float64)
                           for size, ins in zip(self.weight_sizes, instructions)]
                          ) if instructions else torch.zeros(0, dtype=torch.float64)
        self.constants = _Constants(scale=scale)


def _plan(linear: o3.Linear) -> _LinearPlan:
    plan = linear.__dict__.get("_mmajor_plan")
    if plan is None:
        plan = _LinearPlan(linear)
        linear.__dict__["_mmajor_plan"] = plan
    return plan


def equivariant_linear(linears, x: torch.Tensor) -> torch.Tensor:
    """Evaluate one ``o3.Linear``, or several with equal irreps side by side, on m-major ``x``.

    ``x (..., irreps_in.dim)`` m-major. One linear: ``(..., irreps_out.dim)`` m-major. A list of
    ``h`` linears: ``(..., h * irreps_out.dim)`` where the block of output type ``t`` is
    ``(2l_t+1, h, mul_t)`` (all linears' channels of one component together), i.e. m-major
    features of ``h x irreps_out`` regrouped by type; the heads use this to run one ``mm`` per
    irrep type for all matrices.
    """
    linears = [linears] if isinstance(linears, o3.Linear) else list(linears)
    plan = _plan(linears[0])
    leading = x.shape[:-1]
    weights = []
    for linear in linears:
        scaled = linear.weight * _plan(linear).constants.get("scale", x)
        weights.append(scaled.split(plan.weight_sizes) if len(plan.weight_sizes) > 1
                       else (scaled,))
    xs = x.split(plan.in_dims, dim=-1) if len(plan.in_dims) > 1 else (x,)
    outputs = []
    for i_out, (mul, ir) in enumerate(plan.irreps_out):
        terms = plan.terms[i_out]
        if not terms:
            outputs.append(x.new_zeros(*leading, len(linears) * mul * ir.dim))
            continue
        result = None
        for k, i_in, mul_in, mul_out in terms:
            w = (weights[0][k].view(mul_in, mul_out) if len(linears) == 1 else
                 torch.cat([w[k].view(mul_in, mul_out) for w in weights], dim=1))
            term = torch.mm(xs[i_in].reshape(-1, mul_in), w)  # (N (2l+1), h mul_out)
            result = term if result is None else result + term
        outputs.append(result.view(*leading, -1))
    return torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]


class DepthwiseTensorProduct(nn.Module):
    """Depthwise (``uvu``) tensor product of features with edge spherical harmonics.

    For every input block ``(U, l1)``, every harmonic degree ``l2`` and every allowed output
    ``L`` (``|l1-l2| <= L <= l1+l2``, parity ``(-1)^(l1+l2)``, ``L`` in ``allowed_ls``):

    .. math::

        z^{(l_1 l_2 L)}_{e u M} = w_{e u}^{(l_1 l_2 L)} \\sqrt{2L+1}
            \\sum_{m_1 m_2} C^{l_1 l_2 L}_{m_1 m_2 M} x_{e u m_1} Y^{l_2}_{e m_2}

    Evaluated in three steps. (1) :meth:`couple`: ``G_{e, k m_1} = sum_{m_2} sqrt(2L+1)
    C_{m_1 m_2 M} Y_{e m_2}`` for every path component ``k`` of every input block, one matmul of
    the harmonics with a fixed table; it depends only on the edge directions, so all products
    with the same irreps share it within a forward pass. (2) Per input block one ``bmm``:
    ``z_{e k u} = sum_{m_1} G_{e k m_1} x_{e m_1 u}`` (``x`` m-major). The components ``k`` of a
    block are ordered (output type, ``M``, path), so each block's result is already m-major per
    output type and the output is a concatenation (no gather). (3) The weights: the radial MLP's
    last layer is linear, so its columns are permuted once (a parameter-sized gather) and one
    ``mm`` gives ``w`` directly in output-channel order; each type's block ``(2L+1, channels)``
    is multiplied by its channels' weights broadcast over ``M`` (a weight per component would be
    ``2L+1`` times the memory traffic). The tables are built by ``e3nn.o3.wigner_3j``
    in float64 and cast per dtype: e3nn's own ``TensorProduct`` bakes them in torch's default
    dtype (float32), which breaks float64 equivariance at the 1e-8 level.

    Shapes: ``x (..., E, irreps_in.dim)`` m-major, ``sh (..., E, irreps_sh.dim)``, radial MLP
    hidden features ``(..., E, H)`` -> ``(..., E, irreps_out.dim)`` m-major; ``irreps_out`` stacks
    the paths of equal ``(L, p)`` as channels (blocks, then paths, then input channels). The
    weight vector of e3nn's layout (what the radial MLP outputs) is, per input block,
    ``(path, channel)`` row-major.

    ``used_irreps``: the output irreps whoever reads the product uses (an ``o3.Linear`` only
    connects equal irreps, so e.g. an interaction's ``1e`` and ``2o`` outputs reach no gate
    input). Paths to other irreps are not computed and ``irreps_out`` leaves them out;
    ``weight_numel`` still counts their weights, so the radial MLP and model files keep their
    shapes (those weights never had a gradient).
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, allowed_ls,
                 used_irreps=None):
        super().__init__()
        self.irreps_in, self.irreps_sh = o3.Irreps(irreps_in), o3.Irreps(irreps_sh)
        self.allowed_ls = tuple(sorted(set(allowed_ls)))
        self.used_irreps = (None if used_irreps is None else
                            tuple(sorted({o3.Irrep(ir) for ir in used_irreps},
                                         key=lambda ir: (ir.l, ir.p))))
        sh_offsets = np.cumsum([0] + [ir.dim for _, ir in self.irreps_sh])
        blocks, path_irreps = [], []
        for mul, ir_in in self.irreps_in:
            paths = [(i_sh, ir_out) for i_sh, (_, ir_sh) in enumerate(self.irreps_sh)
                     for ir_out in ir_in * ir_sh if ir_out.l in self.allowed_ls]
            blocks.append((mul, ir_in, paths))
            path_irreps += [(mul, ir_out) for _, ir_out in paths]
        self._path_irreps = o3.Irreps(path_irreps)
        self._output_irs = sorted({ir for _, ir in self._path_irreps
                                   if self.used_irreps is None or ir in self.used_irreps},
                                  key=lambda ir: (ir.l, ir.p))
        if not self._output_irs:
            raise ValueError(f"no path of {self.irreps_in} x {self.irreps_sh} reaches the used "
                             f"irreps {self.used_irreps}")
        self.irreps_out = o3.Irreps([
            (sum(mul for mul, ir in self._path_irreps if ir == target), target)
            for target in self._output_irs])
        tables, w_columns = [], {ir: [] for ir in self._output_irs}
        self._in_dims = [mul * ir.dim for mul, ir in self.irreps_in]
        self._coupled_sizes, self._block_shapes, self._block_types = [], [], []
        w_offset = 0
        for mul, ir_in, paths in blocks:
            rows, types = [], []
            for target in self._output_irs:
                chosen = [(p, i_sh) for p, (i_sh, ir_out) in enumerate(paths) if ir_out == target]
                if not chosen:
                    continue
                cgs = []
                for p, i_sh in chosen:
                    cg = o3.wigner_3j(ir_in.l, self.irreps_sh[i_sh].ir.l, target.l,
                                      dtype=torch.float64) * math.sqrt(target.dim)
                    full = torch.zeros(self.irreps_sh.dim, target.dim, ir_in.dim,
                                       dtype=torch.float64)
                    full[sh_offsets[i_sh] : sh_offsets[i_sh + 1]] = cg.permute(1, 2, 0)
                    cgs.append(full)
                rows.append(torch.stack(cgs, dim=2))  # (sh, 2L+1, n_paths, 2l1+1): (M, path)
                types.append((target, len(chosen)))
                path_index = np.array([p for p, _ in chosen])
                w_columns[target].append(  # (n_paths, U): weight of (path, u)
                    w_offset + path_index[:, None] * mul + np.arange(mul)[None, :])
            table = torch.cat([r.reshape(self.irreps_sh.dim, -1, ir_in.dim) for r in rows], 1) \
                if rows else torch.zeros(self.irreps_sh.dim, 0, ir_in.dim, dtype=torch.float64)
            tables.append(table.reshape(self.irreps_sh.dim, -1))
            k_total = table.shape[1]
            self._coupled_sizes.append(k_total * ir_in.dim)
            self._block_shapes.append((k_total, ir_in.dim, mul))
            self._block_types.append([(t, n * mul) for t, n in types])
            w_offset += len(paths) * mul
        self._weight_numel = w_offset
        # weight of every output channel (type, channel); it is shared by the type's 2L+1
        # components, so the product broadcasts it over M instead of holding it per component
        w_index = np.concatenate([np.concatenate([c.ravel() for c in w_columns[ir]])
                                  for ir in self._output_irs])
        self._output_channels = [mul for mul, _ in self.irreps_out]
        self._constants = _Constants(table=torch.cat(tables, dim=1),
                                     w_index=torch.as_tensor(w_index))

    @property
    def weight_numel(self) -> int:
        """One weight per path and channel."""
        return self._weight_numel

    @property
    def structure(self) -> tuple:
        """Products with equal ``structure`` have equal :meth:`couple` results."""
        return (str(self.irreps_in), str(self.irreps_sh), self.allowed_ls, self.used_irreps)

    def couple(self, sh: torch.Tensor) -> torch.Tensor:
        """``G (..., E, sum_b K_b (2 l_b + 1))``: the harmonics contracted with the CG tables."""
        return torch.matmul(sh, self._constants.get("table", sh))

    def output_weights(self, radial_mlp: e3nn_nn.FullyConnectedNet, radial: torch.Tensor):
        """``radial_mlp(radial)`` (weights ``(..., weight_numel)``) in output-channel order
        ``(..., sum_t mul_t)`` (type, then its channels): the last (linear) layer's columns
        permuted."""
        *hidden_layers, last = radial_mlp
        if last.act is not None:
            raise ValueError("the radial MLP's last layer must be linear")
        hidden = radial
        for layer in hidden_layers:
            hidden = layer(hidden)
        weight = last.weight / (last.h_in * last.var_in / last.var_out) ** 0.5  # (H, numel)
        ordered = weight.t().index_select(0, self._constants.get("w_index", radial))  # (C, H)
        return torch.matmul(hidden, ordered.t())

    def forward(self, x, coupled, weights):
        """``x`` m-major input features, ``coupled = self.couple(sh)``, ``weights`` from
        :meth:`output_weights` (one per output channel, shared by its 2L+1 components)."""
        leading = x.shape[:-1]
        xs = x.split(self._in_dims, dim=-1) if len(self._in_dims) > 1 else (x,)
        gs = coupled.split(self._coupled_sizes, dim=-1)
        per_type = {ir: [] for ir in self._output_irs}
        for block, g, (k_total, dim_in, mul), types in zip(xs, gs, self._block_shapes,
                                                           self._block_types):
            if not k_total:  # no path of this block reaches a used output
                continue
            z = torch.bmm(g.reshape(-1, k_total, dim_in), block.reshape(-1, dim_in, mul))
            z = z.view(-1, k_total * mul)
            pieces = z.split([t.dim * channels for t, channels in types], dim=-1)
            for (t, channels), piece in zip(types, pieces):
                per_type[t].append(piece.view(-1, t.dim, channels))
        type_weights = weights.reshape(-1, weights.shape[-1]).split(self._output_channels, -1)
        out = torch.cat([
            ((torch.cat(per_type[ir], dim=-1) if len(per_type[ir]) > 1 else per_type[ir][0])
             * w.unsqueeze(-2)).view(-1, ir.dim * mul)  # (N, 2L+1, mul) x (N, 1, mul)
            for (mul, ir), w in zip(self.irreps_out, type_weights)], dim=-1)
        return out.view(*leading, -1)


def gated_irreps(irreps_hidden: o3.Irreps) -> tuple[o3.Irreps, o3.Irreps, o3.Irreps]:
    """Split ``irreps_hidden`` into ``(scalars, gates, gated)`` for :class:`e3nn.nn.Gate`."""
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l == 0])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l > 0])
    gates = o3.Irreps([(mul, "0e") for mul, _ in gated])
    return scalars, gates, gated


class GatePlan:
    """e3nn's ``Gate`` on m-major features: ``[phi(s), sigma(g)_c x_c]``.

    The input is ``[scalars | gates | gated]`` (what ``Gate.irreps_in`` is, the ``0e`` part
    merged); ``phi`` and ``sigma`` carry e3nn's second-moment normalization constants, and
    every gated channel ``c`` is scaled by its own gate (one gather spreads the gates over the
    ``2l+1`` components of m-major features).
    """

    def __init__(self, gate: e3nn_nn.Gate):
        scalar_acts, gate_acts = gate.act_scalars.acts, gate.act_gates.acts
        if len(scalar_acts) != 1 or len({id(a.f) for a in gate_acts}) != 1:
            raise ValueError("one scalar activation and one gate activation expected")
        self.scalar_act, self.gate_act = scalar_acts[0], gate_acts[0]
        self.sizes = [gate.irreps_scalars.dim, gate.irreps_gates.dim, gate.irreps_gated.dim]
        index, channel = [], 0
        for mul, ir in gate.irreps_gated:
            index.append(channel + np.tile(np.arange(mul), ir.dim))  # (2l+1, mul) m-major
            channel += mul
        self.constants = _Constants(gate_index=torch.as_tensor(np.concatenate(index)))

    @staticmethod
    def _apply(act, x):
        return x if act._is_id else act.f(x) * act.cst

    def __call__(self, features):
        scalars, gates, gated = features.split(self.sizes, dim=-1)
        gates = self._apply(self.gate_act, gates).index_select(
            -1, self.constants.get("gate_index", features))
        return torch.cat([self._apply(self.scalar_act, scalars), gated * gates], dim=-1)


class Interaction(nn.Module):
    """One equivariant message-passing layer with depthwise (``uvu``) tensor products.

    .. math::

        m_i = \\frac{1}{\\sqrt{\\bar n}} \\sum_{j} W(r_{ij}) \\cdot
              \\big(W_1 x_j \\otimes_{uvu} Y(\\hat r_{ij})\\big), \\qquad
        x_i' = x_i + \\mathrm{Gate}(W_2 m_i + W_3 x_i)

    ``W(r)`` is an MLP of the radial basis giving one weight per path and channel. A depthwise
    product couples each channel with the edge's spherical harmonics only (no channel mixing),
    which costs ``O(C)`` instead of ``O(C^2)`` per path; channel mixing happens in the linears.

    Shapes: ``x (B, A, irreps_hidden.dim)`` m-major, ``edge_coupled (B, E, .)`` from
    ``tensor_product.couple(Y)``, ``edge_radial (B, E, F)``; ``edge_src, edge_dst (E,)``
    shared by the batch.
    """

    def __init__(self, irreps_hidden: o3.Irreps, irreps_sh: o3.Irreps, num_radial: int,
                 radial_hidden: int, avg_neighbors: float):
        super().__init__()
        self.irreps_hidden = o3.Irreps(irreps_hidden)
        self.avg_neighbors = float(avg_neighbors)
        self.linear_in = o3.Linear(self.irreps_hidden, self.irreps_hidden)
        scalars, gates, gated = gated_irreps(self.irreps_hidden)
        # the message linear maps to the gate's inputs, so only their irreps are computed
        self.tensor_product = DepthwiseTensorProduct(
            self.irreps_hidden, irreps_sh, allowed_ls=self.irreps_hidden.ls,
            used_irreps=[ir for _, ir in scalars + gates + gated])
        self.irreps_mid = self.tensor_product.irreps_out
        self.radial_weights = e3nn_nn.FullyConnectedNet(
            [num_radial, radial_hidden, self.tensor_product.weight_numel], torch.nn.functional.silu
        )
        self.gate = e3nn_nn.Gate(
            scalars, [torch.nn.functional.silu] * len(scalars),
            gates, [torch.sigmoid] * len(gates), gated,
        )
        self._gate = GatePlan(self.gate)
        self.linear_message = o3.Linear(self.irreps_mid, self.gate.irreps_in)
        self.linear_self = o3.Linear(self.irreps_hidden, self.gate.irreps_in)

    def forward(self, x, edge_src, edge_dst, edge_coupled, edge_radial):
        messages = self.tensor_product(  # (B, E, irreps_mid.dim)
            equivariant_linear(self.linear_in, x).index_select(-2, edge_src), edge_coupled,
            self.tensor_product.output_weights(self.radial_weights, edge_radial))
        aggregated = scatter_sum(messages, edge_dst, x.shape[-2]) / math.sqrt(self.avg_neighbors)
        update = self._gate(equivariant_linear(self.linear_message, aggregated)
                            + equivariant_linear(self.linear_self, x))
        return x + update
