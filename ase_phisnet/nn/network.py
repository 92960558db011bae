"""PhiSNet, the matrix network: equivariant prediction of H (and S, core H) and features.

Units: positions in Bohr, matrices in Hartree (S dimensionless); matrices in PySCF's AO order.
The network knows nothing of energies: :mod:`ase_phisnet.electronic.model` composes it with
exact integrals, the electronic energy term, the learned remainder and priors.

Wiring (blocks in :mod:`ase_phisnet.nn.layers` and :mod:`ase_phisnet.nn.heads`)::

    Z -> element embedding (scalars) -> num_layers x Interaction -> atom features x_i
    (x_i, x_j, r_ij) -> PairFeatures -> pair features p_ij
    [TraceGrad: invariants of x_i, p_ij -> MLP -> tr(H_b H_b^T); gradient of them -> x, p]
    (x_i, p_ij) -> MatrixHead per matrix -> M;  H = M + M^T
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from ase.data import atomic_numbers as ATOMIC_NUMBER_OF_SYMBOL
from ase.data import chemical_symbols
from e3nn import nn as e3nn_nn
from e3nn import o3
from torch import nn

from ase_phisnet.core.basis import BasisLayout
from ase_phisnet.core.errors import UnsupportedElementError
from ase_phisnet.nn.heads import (
    MatrixHead,
    block_irreps_and_expansion,
    build_assembly,
    build_template,
    predict_matrices,
)
from ase_phisnet.nn.layers import (
    BesselRadialBasis,
    DepthwiseTensorProduct,
    Interaction,
    equivariant_linear,
    smooth_cutoff,
)
from ase_phisnet.nn.tracegrad import TraceGrad

#: Matrices a network head can predict.
MATRIX_NAMES = ("hamiltonian", "overlap", "core_hamiltonian")


@dataclass(frozen=True)
class NetworkConfig:
    """Hyperparameters of a :class:`PhiSNet` matrix network.

    Attributes:
        basis: PySCF basis name the matrices live in.
        elements: Chemical symbols the network knows.
        channels: Channels per degree ``l = 0 .. max_degree`` of the hidden features.
        max_degree: Highest feature degree; ``None`` means ``2 * l_max`` of the basis.
        num_layers: Interaction layers.
        num_radial: Radial basis functions.
        radial_hidden: Hidden width of the radial MLPs.
        cutoff_bohr: Interaction cutoff in Bohr. Messages and pair features vanish smoothly
            at it (radial basis with a cutoff envelope, bias-free radial MLPs), so the
            predicted off-diagonal blocks are zero for pairs farther apart; an exact baseline
            (H_core, V_SAP) still covers every pair.
        avg_neighbors: Normalization of the summed messages.
        matrices: Which matrices to predict (subset of ``MATRIX_NAMES``; ``hamiltonian`` first).
        tracegrad: Add the TraceGrad invariant branch and its gradient features.
    """

    basis: str = "def2-svp"
    elements: tuple[str, ...] = ("H", "O")
    channels: tuple[int, ...] = (32, 16, 16, 8, 8)
    max_degree: int | None = None
    num_layers: int = 3
    num_radial: int = 16
    radial_hidden: int = 32
    cutoff_bohr: float = 10.0
    avg_neighbors: float = 8.0
    matrices: tuple[str, ...] = MATRIX_NAMES
    tracegrad: bool = False

    def __post_init__(self):
        object.__setattr__(self, "elements", tuple(self.elements))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "matrices", tuple(self.matrices))
        for symbol in self.elements:
            if symbol not in ATOMIC_NUMBER_OF_SYMBOL:
                raise ValueError(f"unknown element symbol {symbol!r}")
        unknown = set(self.matrices) - set(MATRIX_NAMES)
        if unknown or "hamiltonian" not in self.matrices:
            raise ValueError(f"matrices must include 'hamiltonian' and be from {MATRIX_NAMES}")
        if self.num_layers < 1 or self.num_radial < 1 or self.cutoff_bohr <= 0:
            raise ValueError("num_layers, num_radial and cutoff_bohr must be positive")
        if any(c < 1 for c in self.channels):
            raise ValueError(f"every degree needs >= 1 channel, got {self.channels}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def onsite_overlap(basis: str, atomic_number: int):
    """Overlap of one atom's AOs with themselves (PySCF order): constant for every geometry."""
    from pyscf import gto

    mol = gto.M(atom=[[chemical_symbols[atomic_number], (0, 0, 0)]], basis=basis,
                spin=atomic_number % 2, verbose=0)
    return mol.intor("int1e_ovlp")


class PairFeatures(nn.Module):
    """``p_ij = W(r_ij) * ((A x_i + B x_j) (x)_uvu Y(r_ij))``: equivariant pair features.

    ``irreps_in``: the atom features' irreps; ``irreps_out``: the depthwise product's, only
    the ``used_irreps`` when given (the irreps the matrix heads read).
    """

    def __init__(self, irreps_hidden, irreps_sh, num_radial, radial_hidden, used_irreps=None):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_hidden)
        self.linear_src = o3.Linear(irreps_hidden, irreps_hidden)
        self.linear_dst = o3.Linear(irreps_hidden, irreps_hidden)
        self.tensor_product = DepthwiseTensorProduct(irreps_hidden, irreps_sh,
                                                     allowed_ls=irreps_hidden.ls,
                                                     used_irreps=used_irreps)
        self.radial_weights = e3nn_nn.FullyConnectedNet(
            [num_radial, radial_hidden, self.tensor_product.weight_numel], nn.functional.silu)
        self.irreps_out = self.tensor_product.irreps_out

    def forward(self, x, pair_src, pair_dst, pair_coupled, pair_radial):
        """``x (B, A, hidden)`` m-major, ``pair_coupled = tensor_product.couple(Y)``; returns
        ``(B, P, irreps_out.dim)`` m-major."""
        mixed = (equivariant_linear(self.linear_src, x).index_select(-2, pair_src)
                 + equivariant_linear(self.linear_dst, x).index_select(-2, pair_dst))
        return self.tensor_product(mixed, pair_coupled, self.tensor_product.output_weights(
            self.radial_weights, pair_radial))


class PhiSNet(nn.Module):
    """The matrix network. ``forward(atomic_numbers, positions_bohr)`` returns a dict of the
    predicted matrices and the features an energy model may use (:meth:`forward`)."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = config
        self.layout = BasisLayout(config.basis, list(config.elements))
        self.atomic_numbers = [ATOMIC_NUMBER_OF_SYMBOL[s] for s in config.elements]
        max_degree = config.max_degree if config.max_degree is not None else 2 * self.layout.max_l
        if len(config.channels) < max_degree + 1:
            raise ValueError(f"channels needs {max_degree + 1} entries (l = 0..{max_degree}), "
                             f"got {len(config.channels)}")
        self.irreps_hidden = o3.Irreps(
            [(config.channels[l], (l, (-1) ** l)) for l in range(max_degree + 1)])
        self.irreps_sh = o3.Irreps.spherical_harmonics(max_degree)
        lookup = torch.full((max(self.atomic_numbers) + 1,), -1, dtype=torch.long)
        lookup[self.atomic_numbers] = torch.arange(len(self.atomic_numbers))
        self.register_buffer("species_of_z", lookup, persistent=False)
        self.embedding = nn.Embedding(len(self.atomic_numbers), config.channels[0])
        self.radial = BesselRadialBasis(config.num_radial, config.cutoff_bohr)
        self.embed_to_hidden = o3.Linear(o3.Irreps(f"{config.channels[0]}x0e"), self.irreps_hidden)
        self.interactions = nn.ModuleList(
            Interaction(self.irreps_hidden, self.irreps_sh, config.num_radial,
                        config.radial_hidden, config.avg_neighbors)
            for _ in range(config.num_layers))
        self.template = build_template(self.layout)
        # The heads read the pair features' irreps of the matrix blocks only; TraceGrad reads all
        block_irreps = [ir for _, ir in block_irreps_and_expansion(self.template.slot_ls)[0]]
        self.pair_features = PairFeatures(self.irreps_hidden, self.irreps_sh, config.num_radial,
                                          config.radial_hidden,
                                          used_irreps=None if config.tracegrad else block_irreps)
        self.heads = nn.ModuleDict()
        for name in config.matrices:
            fixed = None
            if name == "overlap":
                fixed = {z: onsite_overlap(config.basis, z) for z in self.atomic_numbers}
            self.heads[name] = MatrixHead(self.irreps_hidden, self.pair_features.irreps_out,
                                          self.template, self.atomic_numbers, fixed)
        self.tracegrad = None
        if config.tracegrad:
            self.tracegrad = TraceGrad(self.irreps_hidden, self.pair_features.irreps_out)
        self._assembly_cache = {}

    @property
    def num_scalar_features(self) -> int:
        """Width of ``atom_scalars`` (the ``0e`` channels of the atom features)."""
        return self.config.channels[0]

    def species(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Model-element index of each atom; raise for elements the network does not know."""
        z = atomic_numbers.to(self.species_of_z.device)
        if int(z.max()) >= len(self.species_of_z) or bool((self.species_of_z[z] < 0).any()):
            unknown = sorted({chemical_symbols[int(v)] for v in z
                              if int(v) not in self.atomic_numbers})
            raise UnsupportedElementError(
                f"model knows elements {list(self.config.elements)}; got {unknown}")
        return self.species_of_z[z]

    def forward(self, atomic_numbers: torch.Tensor, positions_bohr: torch.Tensor,
                return_invariants: bool = False) -> dict[str, torch.Tensor]:
        """Matrices and features of one molecule, or of a batch of geometries of it.

        Args:
            atomic_numbers: (A,) long.
            positions_bohr: (A, 3) or (B, A, 3) float, may require grad.
            return_invariants: also return the TraceGrad predictions (below).

        Returns:
            One entry per predicted matrix, ``([B,] nao, nao)`` in PySCF AO order (Eh; S
            dimensionless); ``"atom_scalars"`` ``([B,] A, channels[0])``, the invariant atom
            features; ``"pair_distances_bohr"`` ``([B,] P)`` over the ordered pairs of
            :meth:`pairs`; with ``return_invariants`` the TraceGrad predictions
            ``"trace_atom"`` ([B,] A) and ``"trace_pair"`` ([B,] P) of ``|H_b|_F`` (Eh).
        """
        if self.tracegrad is None or torch.is_grad_enabled():
            return self._forward(atomic_numbers, positions_bohr, return_invariants)
        # TraceGrad's features are gradients through the whole network (atom features enter
        # the pair features too), so they need the graph even in inference; detach after.
        with torch.enable_grad():
            outputs = self._forward(atomic_numbers, positions_bohr, return_invariants)
        return {k: v.detach() for k, v in outputs.items()}

    def _forward(self, atomic_numbers, positions_bohr, return_invariants):
        single = positions_bohr.dim() == 2
        positions = positions_bohr.unsqueeze(0) if single else positions_bohr  # (B, A, 3)
        molecule = self._molecule(atomic_numbers, positions.device)
        species, pair_src, pair_dst = molecule["species"], molecule["src"], molecule["dst"]
        vectors = (positions.index_select(1, pair_dst)
                   - positions.index_select(1, pair_src))  # (B, P, 3)
        distances = vectors.norm(dim=-1)  # (B, P)
        sh = o3.spherical_harmonics(self.irreps_sh, vectors, normalize=True,
                                    normalization="component")  # (B, P, sh)
        # Zero beyond the cutoff, and the radial MLPs have no biases, so pairs beyond it
        # send no messages: every pair can be kept and the batch shares one pair list.
        radial = self.radial(distances)  # (B, P, F)
        # Every tensor product contracts the same harmonics with the same CG tables: once.
        coupled = {}
        for product in [i.tensor_product for i in self.interactions] + [
                self.pair_features.tensor_product]:
            if product.structure not in coupled:
                coupled[product.structure] = product.couple(sh)

        x = equivariant_linear(self.embed_to_hidden, self.embedding(species))  # (A, hidden)
        x = x.unsqueeze(0).expand(positions.shape[0], -1, -1)  # (B, A, hidden), m-major
        for interaction in self.interactions:
            x = interaction(x, pair_src, pair_dst, coupled[interaction.tensor_product.structure],
                            radial)
        pair = self.pair_features(x, pair_src, pair_dst,
                                  coupled[self.pair_features.tensor_product.structure], radial)
        envelope = smooth_cutoff(distances, 2 * self.config.cutoff_bohr)  # (B, P)

        outputs = {}
        if self.tracegrad is not None:
            x, pair, trace_atom, trace_pair = self.tracegrad(x, pair * envelope.unsqueeze(-1))
            envelope = None  # already applied
            if return_invariants:
                outputs.update(trace_atom=trace_atom, trace_pair=trace_pair)
        matrices = predict_matrices(self.heads.values(), x, pair, molecule["assembly"],
                                    pair_weight=envelope)
        outputs.update(zip(self.heads.keys(), matrices))
        outputs["atom_scalars"] = x[..., : self.num_scalar_features]  # the 0e channels first
        outputs["pair_distances_bohr"] = distances
        return {k: v.squeeze(0) for k, v in outputs.items()} if single else outputs

    def _molecule(self, atomic_numbers: torch.Tensor, device) -> dict:
        """Species, every ordered pair ``i != j`` (P = A(A-1)) and the matrix assembly of a
        molecule; depends only on the atomic numbers, cached (MD steps reuse it)."""
        key = (tuple(atomic_numbers.tolist()), str(device))
        if key not in self._assembly_cache:
            species = self.species(atomic_numbers).to(device)
            n_atoms = len(key[0])
            index = torch.arange(n_atoms)
            src, dst = torch.meshgrid(index, index, indexing="ij")
            keep = src != dst
            src, dst = src[keep], dst[keep]
            assembly = build_assembly(key[0], species.cpu().numpy(), src.numpy(), dst.numpy(),
                                      list(self.heads.values()), self.template, device=device)
            self._assembly_cache[key] = {"species": species, "src": src.to(device),
                                         "dst": dst.to(device), "assembly": assembly}
        return self._assembly_cache[key]

    def pairs(self, atomic_numbers: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pair_src, pair_dst)``, each (P,): every ordered atom pair ``i != j``, in the order
        of the pair outputs (``pair_distances_bohr``, ``trace_pair``)."""
        molecule = self._molecule(atomic_numbers, device)
        return molecule["src"], molecule["dst"]
