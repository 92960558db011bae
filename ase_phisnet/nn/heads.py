"""Matrix heads: from equivariant atom and pair features to AO matrices (H, S, core H).

Every atom's AOs are placed in one *template* basis shared by all elements of a model: for each
``l`` as many shell slots as the element with most shells of that ``l`` has (def2-SVP over H, C,
N, O: ``s s s p p d``, 14 functions). A block between atoms ``i`` and ``j`` is first predicted on
the template as irreps and then cut down to the two elements' real shells.

For a slot pair ``(s1, s2)`` of degrees ``(l1, l2)`` the sub-block is the Clebsch–Gordan
expansion of irreps of degree ``L = |l1-l2| .. l1+l2``:

.. math::

    B_{s_1 m_1, s_2 m_2} = \\sum_{L} \\sqrt{2L+1}
                           \\sum_{M} C^{l_1 l_2 L}_{m_1 m_2 M} f^{(s_1 s_2 L)}_M

This map is orthogonal and equivariant, ``B(R x) = D_{l_1}(R) B(x) D_{l_2}(R)^T``. Together with
PySCF's change of basis ``Q`` (:mod:`ase_phisnet.core.basis`) it is one fixed matrix, so assembling
all blocks of all matrices of a molecule is one matmul and one gather (no loop over atom pairs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from e3nn import o3
from torch import nn

from ase_phisnet.core.basis import BasisLayout, pyscf_from_e3nn
from ase_phisnet.nn.layers import equivariant_linear, mmajor_permutation


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
    the template expansion, and finally ``M -> M + M^T`` makes the matrix symmetric by
    construction. With ``fixed_diagonal`` the diagonal blocks are given constants (the on-site
    overlap, which does not depend on the geometry) instead of being predicted.

    The module holds the parameters and fixed tables; :func:`predict_matrices` evaluates all
    heads of a model together. The parameters are laid out on the block irreps in e3nn's
    channel-major order (``onsite_offset``, ``component_irrep``); the network's features are
    m-major (:mod:`ase_phisnet.nn.layers`), so the m-major expansion and path index are the
    e3nn ones permuted by ``block_permutation``.
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
        permutation = mmajor_permutation(irreps_block)
        self.register_buffer("block_permutation", permutation, persistent=False)
        self.register_buffer("component_path_mmajor", self.component_irrep[permutation],
                             persistent=False)
        self._constants64["expansion_mmajor"] = expansion[permutation]
        self._head_major = {}

    def head_major(self, n_heads: int, device) -> torch.Tensor:
        """See :func:`_head_major` (cached)."""
        key = (n_heads, str(device))
        if key not in self._head_major:
            self._head_major[key] = torch.as_tensor(
                _head_major(n_heads, self.irreps_block), device=device)
        return self._head_major[key]

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

@dataclass
class Assembly:
    """Per-molecule indices for evaluating all heads at once (see :func:`predict_matrices`).

    Depends only on the species, the pair list and the heads: built once per molecule and
    reused along an MD trajectory.

    Attributes:
        matrix_index: ``(h, nao, nao)`` flat positions in the stacked blocks ``[atom blocks
            (A, h, T, T); pair blocks (P, h, T, T)]`` of every matrix element (PySCF AO order).
        pair_scale_index: ``(P, h * D)`` positions in the flat stacked ``pair_scale`` tables
            of every pair's scale of every block component (``D`` = block irreps dim).
        atom_scale_index, atom_offset_index: the same for the heads that predict diagonal
            blocks (``atom_scale`` and ``onsite_offset``), ``(A, h_atom * D)``.
        fixed_species: ``(A,)`` species index for the fixed-diagonal tables.
    """

    matrix_index: torch.Tensor
    pair_scale_index: torch.Tensor
    atom_scale_index: torch.Tensor
    atom_offset_index: torch.Tensor
    fixed_species: torch.Tensor


def build_assembly(atomic_numbers, species, pair_src, pair_dst, heads, template: Template,
                   device=None) -> Assembly:
    """Indices for :class:`Assembly`; ``pair_src/pair_dst`` must list every ordered pair i != j.

    ``species`` are the model-element indices of the atoms; ``heads`` the :class:`MatrixHead` s
    in output order.
    """
    atomic_numbers = [int(z) for z in atomic_numbers]
    species = np.asarray(species, dtype=np.int64)
    n_atoms, t, n_heads = len(atomic_numbers), template.nao, len(heads)
    pair_src, pair_dst = np.asarray(pair_src), np.asarray(pair_dst)
    if len(pair_src) != n_atoms * (n_atoms - 1):
        raise ValueError("matrix assembly needs every ordered atom pair")
    # row of the stacked blocks holding block (i, j)
    block_row = np.empty((n_atoms, n_atoms), dtype=np.int64)
    block_row[np.arange(n_atoms), np.arange(n_atoms)] = np.arange(n_atoms)
    block_row[pair_src, pair_dst] = n_atoms + np.arange(len(pair_src))
    ao_atom = np.concatenate([np.full(len(template.ao_to_template[z]), i)
                              for i, z in enumerate(atomic_numbers)])
    ao_slot = np.concatenate([np.asarray(template.ao_to_template[z]) for z in atomic_numbers])
    rows = block_row[ao_atom[:, None], ao_atom[None, :]]  # (nao, nao)
    within = ao_slot[:, None] * t + ao_slot[None, :]
    head = np.arange(n_heads)[:, None, None]
    matrix_index = (rows[None] * n_heads + head) * t * t + within[None]
    head0 = heads[0]
    n_el, n_paths = len(head0.elements), head0.pair_scale.shape[1]
    component_path = head0.component_path_mmajor.cpu().numpy()  # (D,)
    pair_type = species[pair_src] * n_el + species[pair_dst]
    pair_scale_index = ((np.arange(n_heads)[None, :, None] * n_el * n_el
                         + pair_type[:, None, None]) * n_paths
                        + component_path[None, None, :]).reshape(len(pair_src), -1)
    n_atom_heads = sum(not h.fixed_diagonal for h in heads)
    atom_head = np.arange(n_atom_heads)[None, :, None]
    atom_scale_index = ((atom_head * n_el + species[:, None, None]) * n_paths
                        + component_path[None, None, :]).reshape(n_atoms, -1)
    permutation = head0.block_permutation.cpu().numpy()
    atom_offset_index = ((atom_head * n_el + species[:, None, None]) * len(permutation)
                         + permutation[None, None, :]).reshape(n_atoms, -1)

    def tensor(a):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.long, device=device)

    return Assembly(tensor(matrix_index), tensor(pair_scale_index), tensor(atom_scale_index),
                    tensor(atom_offset_index), tensor(species))


def _head_major(n_heads: int, irreps: o3.Irreps) -> np.ndarray:
    """Index taking ``equivariant_linear`` output of ``h`` stacked linears (per type
    ``(2l+1, h, mul)``) to ``(h, D)``, each head's block m-major."""
    position, parts = 0, []
    for mul, ir in irreps:
        parts.append(position + np.arange(ir.dim * n_heads * mul).reshape(ir.dim, n_heads, mul))
        position += ir.dim * n_heads * mul
    return np.concatenate([p.transpose(1, 0, 2).reshape(n_heads, -1) for p in parts],
                          axis=1).ravel()


def predict_matrices(heads, atom_features, pair_features, assembly: Assembly,
                     pair_weight=None) -> list[torch.Tensor]:
    """All heads' matrices at once: ``[(B, nao, nao)]`` in PySCF order, symmetric.

    Per head, ``M_ij = E(s_{type(ij)} * (W p_ij))`` for pairs and
    ``E(s_{Z_i} * (W' x_i) + o_{Z_i})`` (or the fixed on-site table) for atoms, ``E`` the template
    expansion, then ``M + M^T``. The heads' linears run side by side (one ``mm`` per irrep type for
    all heads), the expansion is one matmul and the assembly of every matrix one gather.
    ``pair_weight (B, P)`` optionally multiplies each pair's blocks (the heads are linear in the
    pair features, so this equals scaling the features).

    Features ``(B, A, .)`` and ``(B, P, .)`` m-major.
    """
    heads = list(heads)
    first = heads[0]
    batch, n_atoms = atom_features.shape[0], atom_features.shape[1]
    t2 = first.template.nao ** 2
    expansion = first.constant("expansion_mmajor", pair_features)
    dim = expansion.shape[0]
    pairs = equivariant_linear([h.pair_linear for h in heads], pair_features)
    pairs = pairs.index_select(-1, first.head_major(len(heads), pair_features.device))
    scale = torch.stack([h.pair_scale for h in heads]).reshape(-1)
    pairs = pairs * scale.index_select(0, assembly.pair_scale_index.reshape(-1)).view(
        assembly.pair_scale_index.shape)
    if pair_weight is not None:
        pairs = pairs * pair_weight.unsqueeze(-1)
    pair_blocks = (pairs.view(batch, -1, len(heads), dim) @ expansion)  # (B, P, h, T*T)
    atom_heads = [h for h in heads if not h.fixed_diagonal]
    if atom_heads:
        atoms = equivariant_linear([h.atom_linear for h in atom_heads], atom_features)
        atoms = atoms.index_select(-1, first.head_major(len(atom_heads), atom_features.device))
        index = assembly.atom_scale_index
        scale = torch.stack([h.atom_scale for h in atom_heads]).reshape(-1)
        offset = torch.stack([h.onsite_offset for h in atom_heads]).reshape(-1)
        atoms = (atoms * scale.index_select(0, index.reshape(-1)).view(index.shape)
                 + offset.index_select(0, assembly.atom_offset_index.reshape(-1)).view(index.shape))
        predicted = (atoms.view(batch, n_atoms, len(atom_heads), dim) @ expansion).unbind(2)
    parts, k = [], 0
    for h in heads:
        if h.fixed_diagonal:
            table = h.constant("diagonal_table", pair_features)
            parts.append(table.index_select(0, assembly.fixed_species).reshape(1, n_atoms, t2)
                         .expand(batch, -1, -1))
        else:
            parts.append(predicted[k])
            k += 1
    atom_blocks = 0.5 * torch.stack(parts, dim=2)  # M + M^T doubles the diagonal blocks
    blocks = torch.cat([atom_blocks, pair_blocks], dim=1).reshape(batch, -1)
    half = blocks.index_select(-1, assembly.matrix_index.reshape(-1)).view(
        batch, *assembly.matrix_index.shape)
    matrices = half + half.transpose(-1, -2)
    return list(matrices.unbind(1))
