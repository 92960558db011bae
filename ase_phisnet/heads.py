"""Matrix heads: from equivariant atom and pair features to AO matrices (H, S, core H).

Every atom's AOs are placed in one *template* basis shared by all elements of a model: for each
``l`` as many shell slots as the element with most shells of that ``l`` has (def2-SVP over H, C,
N, O: ``s s s p p d``, 14 functions). A block between atoms ``i`` and ``j`` is first predicted on
the template as irreps and then cut down to the two elements' real shells.

For a slot pair ``(s1, s2)`` of degrees ``(l1, l2)`` the sub-block is the Clebsch–Gordan
expansion of irreps of degree ``L = |l1-l2| .. l1+l2``:

.. math::

    B_{s_1 m_1, s_2 m_2} = \\sum_{L} \\sqrt{2L+1} \\sum_{M} C^{l_1 l_2 L}_{m_1 m_2 M} f^{(s_1 s_2 L)}_M

This map is orthogonal and equivariant, ``B(R x) = D_{l_1}(R) B(x) D_{l_2}(R)^T``. Together with
PySCF's change of basis ``Q`` (:mod:`ase_phisnet.basis`) it is one fixed matrix, so assembling all
blocks of a molecule is one matmul and one scatter (no loop over atom pairs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from e3nn import o3
from torch import nn

from ase_phisnet.basis import BasisLayout, pyscf_from_e3nn


@dataclass(frozen=True)
class Template:
    """Template shells and each element's map into them.

    Attributes:
        slot_ls: Degree of every template slot, sorted by ``l``.
        ao_to_template: For each atomic number, the template AO index of each of its AOs
            in PySCF order.
    """

    slot_ls: tuple[int, ...]
    ao_to_template: dict[int, tuple[int, ...]]

    @property
    def nao(self) -> int:
        return sum(2 * l + 1 for l in self.slot_ls)


def build_template(layout: BasisLayout) -> Template:
    max_count = {}
    for element in layout.elements.values():
        for l in {shell.l for shell in element.shells}:
            count = sum(shell.l == l for shell in element.shells)
            max_count[l] = max(max_count.get(l, 0), count)
    slot_ls = tuple(l for l in sorted(max_count) for _ in range(max_count[l]))
    slot_start = np.cumsum([0] + [2 * l + 1 for l in slot_ls])
    ao_to_template = {}
    for z, element in layout.elements.items():
        used = {l: 0 for l in max_count}
        indices = []
        for shell in element.shells:
            slot = [k for k, l in enumerate(slot_ls) if l == shell.l][used[shell.l]]
            used[shell.l] += 1
            indices += range(slot_start[slot], slot_start[slot] + 2 * shell.l + 1)
        ao_to_template[z] = tuple(int(i) for i in indices)
    return Template(slot_ls, ao_to_template)


def block_irreps_and_expansion(slot_ls) -> tuple[o3.Irreps, torch.Tensor]:
    """Irreps of one template block and the fixed map to the block in PySCF's component order.

    Returns ``(irreps, expansion)`` with ``expansion`` of shape ``(irreps.dim, T*T)`` (float64):
    ``block_flat = features @ expansion`` gives the ``(T, T)`` template block, row-major.
    """
    n = sum(2 * l + 1 for l in slot_ls)
    start = np.cumsum([0] + [2 * l + 1 for l in slot_ls])
    irreps, columns = [], []
    for s1, l1 in enumerate(slot_ls):
        for s2, l2 in enumerate(slot_ls):
            q1, q2 = pyscf_from_e3nn(l1), pyscf_from_e3nn(l2)
            for L in range(abs(l1 - l2), l1 + l2 + 1):
                cg = o3.wigner_3j(l1, l2, L, dtype=torch.float64) * math.sqrt(2 * L + 1)
                # (2l1+1, 2l2+1, 2L+1) in e3nn components -> PySCF components
                cg = torch.einsum("am,bn,mnk->abk", q1, q2, cg)
                block = torch.zeros(n, n, 2 * L + 1, dtype=torch.float64)
                block[start[s1] : start[s1 + 1], start[s2] : start[s2 + 1]] = cg
                columns.append(block.reshape(n * n, 2 * L + 1).T)
                irreps.append((1, (L, (-1) ** (l1 + l2))))
    return o3.Irreps(irreps), torch.cat(columns, dim=0)


class MatrixHead(nn.Module):
    """Predicts one AO matrix (shape ``(nao, nao)``, PySCF order) from atom and pair features.

    Diagonal blocks come from atom features, off-diagonal blocks from directed pair features;
    both pass an equivariant linear map, a learned scale per element (pair) and output irrep,
    the template expansion,
    and finally ``M -> M + M^T`` makes the matrix symmetric by construction. With
    ``fixed_diagonal`` the diagonal blocks are given constants (the on-site overlap, which does
    not depend on the geometry) instead of being predicted.
    """

    def __init__(self, irreps_atom: o3.Irreps, irreps_pair: o3.Irreps, template: Template,
                 elements: list[int], fixed_diagonal: dict[int, np.ndarray] | None = None):
        super().__init__()
        self.template = template
        self.elements = list(elements)
        irreps_paths, expansion = block_irreps_and_expansion(template.slot_ls)
        # Group the block's irreps by type so each linear is one matmul per irrep type;
        # the expansion's rows follow the same order.
        component_path = torch.cat([torch.full((ir.dim,), k) for k, (_, ir) in
                                    enumerate(irreps_paths)])
        order = sorted(range(len(irreps_paths)),
                       key=lambda k: (irreps_paths[k].ir.l, irreps_paths[k].ir.p, k))
        starts = np.cumsum([0] + [ir.dim for _, ir in irreps_paths])
        component_order = torch.cat([torch.arange(starts[k], starts[k + 1]) for k in order])
        irreps_block = o3.Irreps([irreps_paths[k] for k in order]).simplify()
        expansion = expansion[component_order]
        self.irreps_block = irreps_block
        n_paths = len(irreps_paths)
        # Fixed constants derived from the config: kept in float64 outside the state dict and
        # cast once per dtype/device, so a float64 model never sees float32-rounded values.
        self._constants64 = {"expansion": expansion}
        self._constants_cache = {}
        n_el = len(self.elements)
        # Which (slot pair, L) path each block component belongs to, for per-element scales.
        self.register_buffer("component_irrep", component_path[component_order], persistent=False)
        self.pair_linear = o3.Linear(irreps_pair, irreps_block)
        self.pair_scale = nn.Parameter(torch.ones(n_el * n_el, n_paths))
        self.fixed_diagonal = fixed_diagonal is not None
        if self.fixed_diagonal:
            t = template.nao
            table = torch.zeros(n_el, t, t, dtype=torch.float64)
            for k, z in enumerate(self.elements):
                idx = torch.tensor(template.ao_to_template[z])
                table[k][idx[:, None], idx[None, :]] = torch.as_tensor(fixed_diagonal[z])
            self._constants64["diagonal_table"] = table
        else:
            self.atom_linear = o3.Linear(irreps_atom, irreps_block)
            self.atom_scale = nn.Parameter(torch.ones(n_el, n_paths))
        # Per-element on-site offset in the block's irreps; only its L = 0 components may be
        # non-zero (anything else would break equivariance), see set_onsite_offset.
        self.register_buffer("onsite_offset", torch.zeros(n_el, irreps_block.dim))
        self.register_buffer("invariant_components", torch.cat([
            torch.full((mul * ir.dim,), ir.l == 0 and ir.p == 1, dtype=torch.bool)
            for mul, ir in irreps_block]), persistent=False)

    def constant(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """A fixed table (``expansion``, ``diagonal_table``) in ``like``'s dtype and device."""
        key = (name, like.dtype, like.device)
        if key not in self._constants_cache:
            self._constants_cache[key] = self._constants64[name].to(like.dtype).to(like.device)
        return self._constants_cache[key]

    def set_onsite_offset(self, mean_blocks: dict[int, torch.Tensor]) -> None:
        """Set the on-site offset from mean diagonal blocks ``{Z: (nao_Z, nao_Z)}`` (PySCF order).

        Only the rotation-invariant part (the ``L = 0`` coupling of equal-``l`` slot pairs) is
        kept: the block is projected onto those irreps with the orthogonal expansion.
        """
        expansion = self._constants64["expansion"]
        t = self.template.nao
        offset = torch.zeros_like(self.onsite_offset, dtype=torch.float64)
        for k, z in enumerate(self.elements):
            if z not in mean_blocks:
                continue
            idx = torch.tensor(self.template.ao_to_template[z])
            block = torch.zeros(t, t, dtype=torch.float64)
            block[idx[:, None], idx[None, :]] = torch.as_tensor(mean_blocks[z], dtype=torch.float64)
            coefficients = expansion @ block.reshape(-1)  # orthogonal: projection onto irreps
            offset[k] = torch.where(self.invariant_components.cpu(), coefficients, 0.0)
        self.onsite_offset.copy_(offset.to(self.onsite_offset.dtype))

    def forward(self, atom_features, pair_features, species, pair_src, pair_dst, assembly):
        """Features ``(B, A, .)`` and ``(B, P, .)``; ``species (A,)`` model-element indices;
        ``pair_src/pair_dst (P,)`` every directed pair.

        Returns the symmetric matrices ``(B, nao, nao)`` in PySCF AO order.
        """
        n_el = len(self.elements)
        t = self.template.nao
        pair_type = species.index_select(0, pair_src) * n_el + species.index_select(0, pair_dst)
        batch, n_atoms = atom_features.shape[0], species.shape[0]
        pair_blocks = self.pair_linear(pair_features)  # (B, P, irreps_block)
        pair_blocks = pair_blocks * self.pair_scale.index_select(0, pair_type).index_select(
            1, self.component_irrep)
        expansion = self.constant("expansion", pair_features)
        pair_blocks = (pair_blocks @ expansion).reshape(batch, -1, t, t)  # (B, P, T, T)
        if self.fixed_diagonal:
            atom_blocks = self.constant("diagonal_table", pair_features).index_select(0, species)
            atom_blocks = atom_blocks.expand(batch, -1, -1, -1)
        else:
            atom_blocks = self.atom_linear(atom_features)  # (B, A, irreps_block)
            atom_blocks = atom_blocks * self.atom_scale.index_select(0, species).index_select(
                1, self.component_irrep)
            atom_blocks = atom_blocks + self.onsite_offset.index_select(0, species)
            atom_blocks = (atom_blocks @ expansion).reshape(batch, -1, t, t)  # (B, A, T, T)
        atom_blocks = 0.5 * atom_blocks  # M + M^T doubles the diagonal blocks
        blocks = torch.cat([atom_blocks, pair_blocks], dim=1)  # (B, A + P, T, T)
        grid = blocks.index_select(1, assembly.grid_order)  # (B, A*A, T, T), row-major (i, j)
        padded = grid.reshape(batch, n_atoms, n_atoms, t, t).transpose(2, 3).reshape(
            batch, n_atoms * t, n_atoms * t)
        half = padded.index_select(1, assembly.ao_index).index_select(2, assembly.ao_index)
        return half + half.transpose(1, 2)


@dataclass
class Assembly:
    """Precomputed indices that place template blocks into a molecule's matrix.

    The stacked blocks ``[atom blocks (A, T, T); pair blocks (P, T, T)]`` are reordered by
    ``grid_order`` into an ``A x A`` grid of blocks, i.e. a padded ``(A T, A T)`` matrix, whose
    rows and columns ``ao_index`` are the molecule's AOs in PySCF order. Only index_select is
    used (its backward is a dense index_add). Depends only on the species and the pair list:
    built once per molecule and reused along an MD trajectory.
    """

    grid_order: torch.Tensor
    ao_index: torch.Tensor


def build_assembly(atomic_numbers, pair_src, pair_dst, template: Template, device=None) -> Assembly:
    """Indices for :class:`Assembly`; ``pair_src/pair_dst`` must list every ordered pair i != j."""
    atomic_numbers = [int(z) for z in atomic_numbers]
    n_atoms, t = len(atomic_numbers), template.nao
    pair_src, pair_dst = np.asarray(pair_src), np.asarray(pair_dst)
    if len(pair_src) != n_atoms * (n_atoms - 1):
        raise ValueError("matrix assembly needs every ordered atom pair")
    grid_order = np.empty(n_atoms * n_atoms, dtype=np.int64)
    grid_order[np.arange(n_atoms) * (n_atoms + 1)] = np.arange(n_atoms)
    grid_order[pair_src * n_atoms + pair_dst] = n_atoms + np.arange(len(pair_src))
    ao_index = np.concatenate([i * t + np.asarray(template.ao_to_template[z])
                               for i, z in enumerate(atomic_numbers)])
    return Assembly(
        grid_order=torch.as_tensor(grid_order, device=device),
        ao_index=torch.as_tensor(ao_index, dtype=torch.long, device=device),
    )
