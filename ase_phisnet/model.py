"""PhiSNet: equivariant prediction of H, S (and core H) from a molecular geometry.

Units: positions in Bohr, matrices in Hartree (S dimensionless); matrices in PySCF's AO order.

Wiring (blocks in :mod:`ase_phisnet.layers` and :mod:`ase_phisnet.heads`)::

    Z -> element embedding (scalars) -> num_layers x Interaction -> atom features x_i
    (x_i, x_j, r_ij) -> PairFeatures -> pair features p_ij
    [TraceGrad: invariants of x_i, p_ij -> MLP -> tr(H_b H_b^T); gradient of them -> x, p]
    (x_i, p_ij) -> MatrixHead per matrix -> M;  H = M + M^T
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

import torch
from ase.data import atomic_numbers as ATOMIC_NUMBER_OF_SYMBOL
from ase.data import chemical_symbols
from e3nn import o3
from e3nn import nn as e3nn_nn
from torch import nn

from ase_phisnet._dataclasses import from_dict_checked
from ase_phisnet.basis import BasisLayout
from ase_phisnet.errors import ModelFileError, UnsupportedElementError
from ase_phisnet.heads import MatrixHead, build_assembly, build_template, predict_matrices
from ase_phisnet.integrals import OverlapIntegrals, exact_overlap
from ase_phisnet.layers import (
    BesselRadialBasis,
    DepthwiseTensorProduct,
    Interaction,
    equivariant_linear,
    smooth_cutoff,
)
from ase_phisnet.repulsion import PAIR_REPULSIONS, zbl_pair_energy_eh

MODEL_FORMAT = "ase-phisnet-model"
MODEL_FORMAT_VERSION = 1
MATRIX_NAMES = ("hamiltonian", "overlap", "core_hamiltonian")
#: Energy models (:mod:`ase_phisnet.potential`) and the matrices each needs.
ENERGY_MODEL_MATRICES = {"phisnet": MATRIX_NAMES, "band_structure": ("hamiltonian", "overlap")}
ENERGY_MODELS = tuple(ENERGY_MODEL_MATRICES)


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of a :class:`PhiSNet`; saved beside the weights.

    Attributes:
        basis: PySCF basis name the matrices live in.
        elements: Chemical symbols the model knows.
        channels: Channels per degree ``l = 0 .. max_degree`` of the hidden features.
        max_degree: Highest feature degree; ``None`` means ``2 * l_max`` of the basis.
        num_layers: Interaction layers.
        num_radial: Radial basis functions.
        radial_hidden: Hidden width of the radial MLPs.
        cutoff_bohr: Interaction cutoff in Bohr (matrix blocks use every atom pair).
        avg_neighbors: Normalization of the summed messages.
        matrices: Which matrices to predict (subset of ``MATRIX_NAMES``; ``hamiltonian`` first).
        tracegrad: Add the TraceGrad invariant branch and its gradient features.
        energy_hidden: Width of the atomwise energy-correction MLP (see :meth:`PhiSNet.forward`).
        exact_overlap: Take S from PySCF's integrals (:mod:`ase_phisnet.integrals`, exact and
            differentiable twice in the positions) instead of predicting it; ``matrices`` must
            then leave out ``overlap``.
        energy_model: How the total energy follows from the matrices
            (:mod:`ase_phisnet.potential`): ``"phisnet"``, ``E_nuc + 1/2 Tr[P (H_core + H)]``
            plus the atomwise correction (needs H, S and core H), or ``"band_structure"``,
            ``Tr[P H] = 2 sum_occ eps_i`` plus the atomwise correction (needs H and S).
        pair_repulsion: ``"zbl"`` adds a fixed short-range screened nuclear repulsion
            (:mod:`ase_phisnet.repulsion`) to the atomwise correction: a wall where atoms come
            closer than a bond, which the data do not reach; ``"none"`` adds nothing.
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
    energy_hidden: int = 32
    exact_overlap: bool = False
    energy_model: str = "phisnet"
    pair_repulsion: str = "none"

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
        if self.exact_overlap and "overlap" in self.matrices:
            raise ValueError("exact_overlap takes S from the integrals: leave 'overlap' out of "
                             "matrices")
        if self.energy_model not in ENERGY_MODELS:
            raise ValueError(f"energy_model must be one of {ENERGY_MODELS}, got "
                             f"{self.energy_model!r}")
        if self.pair_repulsion not in PAIR_REPULSIONS:
            raise ValueError(f"pair_repulsion must be one of {PAIR_REPULSIONS}, got "
                             f"{self.pair_repulsion!r}")
        if self.num_layers < 1 or self.num_radial < 1 or self.cutoff_bohr <= 0:
            raise ValueError("num_layers, num_radial and cutoff_bohr must be positive")
        if any(c < 1 for c in self.channels):
            raise ValueError(f"every degree needs >= 1 channel, got {self.channels}")

    @property
    def output_matrices(self) -> frozenset[str]:
        """Matrices the model outputs: the predicted ones, and S when it comes from the integrals."""
        return frozenset(self.matrices) | ({"overlap"} if self.exact_overlap else frozenset())

    @property
    def energy_matrices(self) -> frozenset[str]:
        """Matrices the energy model needs (:mod:`ase_phisnet.potential`)."""
        return frozenset(ENERGY_MODEL_MATRICES[self.energy_model])

    @property
    def predicts_energy(self) -> bool:
        """Whether the model outputs every matrix its energy model needs."""
        return self.energy_matrices <= self.output_matrices

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        return from_dict_checked(cls, values)


def onsite_overlap(basis: str, atomic_number: int):
    """Overlap of one atom's AOs with themselves (PySCF order): constant for every geometry."""
    from pyscf import gto

    mol = gto.M(atom=[[chemical_symbols[atomic_number], (0, 0, 0)]], basis=basis,
                spin=atomic_number % 2, verbose=0)
    return mol.intor("int1e_ovlp")


class PairFeatures(nn.Module):
    """``p_ij = W(r_ij) * ((A x_i + B x_j) (x)_uvu Y(r_ij))``: equivariant pair features."""

    def __init__(self, irreps_hidden, irreps_sh, num_radial, radial_hidden):
        super().__init__()
        self.linear_src = o3.Linear(irreps_hidden, irreps_hidden)
        self.linear_dst = o3.Linear(irreps_hidden, irreps_hidden)
        self.tensor_product = DepthwiseTensorProduct(irreps_hidden, irreps_sh,
                                                     allowed_ls=irreps_hidden.ls)
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
    """The network. ``forward(atomic_numbers, positions_bohr)`` returns a dict of matrices."""

    def __init__(self, config: ModelConfig):
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
        self.pair_features = PairFeatures(self.irreps_hidden, self.irreps_sh, config.num_radial,
                                          config.radial_hidden)
        self.template = build_template(self.layout)
        self.heads = nn.ModuleDict()
        for name in config.matrices:
            fixed = None
            if name == "overlap":
                fixed = {z: onsite_overlap(config.basis, z) for z in self.atomic_numbers}
            self.heads[name] = MatrixHead(self.irreps_hidden, self.pair_features.irreps_out,
                                          self.template, self.atomic_numbers, fixed)
        # Smooth atomwise energy correction E_corr = sum_i [e_Z(i) + MLP(scalars of x_i)]: what
        # the electronic part of the energy model misses of a DFT total energy
        # (ase_phisnet.potential; for "phisnet" E_xc - 1/2 Tr[P v_xc], ...).
        self.energy_mlp = nn.Sequential(
            nn.Linear(config.channels[0], config.energy_hidden), nn.SiLU(),
            nn.Linear(config.energy_hidden, 1))
        self.element_energy_eh = nn.Parameter(torch.zeros(len(self.atomic_numbers)))
        self.tracegrad = None
        if config.tracegrad:
            from ase_phisnet.tracegrad import TraceGrad

            self.tracegrad = TraceGrad(self.irreps_hidden, self.pair_features.irreps_out)
        self._assembly_cache = {}
        self._overlap_integrals = {}  # atomic numbers -> OverlapIntegrals (exact_overlap)

    def species(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Model-element index of each atom; raise for elements the model does not know."""
        z = atomic_numbers.to(self.species_of_z.device)
        if int(z.max()) >= len(self.species_of_z) or bool((self.species_of_z[z] < 0).any()):
            unknown = sorted({chemical_symbols[int(v)] for v in z
                              if int(v) not in self.atomic_numbers})
            raise UnsupportedElementError(
                f"model knows elements {list(self.config.elements)}; got {unknown}")
        return self.species_of_z[z]

    def forward(self, atomic_numbers: torch.Tensor, positions_bohr: torch.Tensor,
                return_invariants: bool = False,
                twice_differentiable: bool = True) -> dict[str, torch.Tensor]:
        """Matrices of one molecule, or of a batch of geometries of the same molecule.

        Args:
            atomic_numbers: (A,) long.
            positions_bohr: (A, 3) or (B, A, 3) float, may require grad.
            return_invariants: also return the TraceGrad predictions (below).
            twice_differentiable: False (force training only) lets an exact overlap skip its
                second position derivatives (:func:`~ase_phisnet.integrals.exact_overlap`):
                the outputs are then differentiable once in the positions, and in the
                parameters through that first derivative; a second derivative in the
                positions (a Hessian) silently misses the d²S/dR² terms.

        Returns:
            ``{"hamiltonian": ([B,] nao, nao) Eh, "overlap": ([B,] nao, nao), ...}`` in PySCF
            AO order; with ``return_invariants`` also the TraceGrad predictions
            ``"trace_atom"`` ([B,] A) and ``"trace_pair"`` ([B,] P) of ``|H_b|_F`` (Eh).
            Always also ``"energy_correction_eh"`` ([B,]): the atomwise term of the energy
            model (:mod:`ase_phisnet.potential`), with the pair repulsion prior if any.
        """
        if self.tracegrad is None or torch.is_grad_enabled():
            return self._forward(atomic_numbers, positions_bohr, return_invariants,
                                 twice_differentiable)
        # TraceGrad's features are gradients through the whole network (atom features enter
        # the pair features too), so they need the graph even in inference; detach after.
        with torch.enable_grad():
            outputs = self._forward(atomic_numbers, positions_bohr, return_invariants,
                                    twice_differentiable)
        return {k: v.detach() for k, v in outputs.items()}

    def _forward(self, atomic_numbers, positions_bohr, return_invariants, twice_differentiable):
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
        if self.config.exact_overlap:
            outputs["overlap"] = exact_overlap(self._integrals(atomic_numbers), positions,
                                               twice_differentiable)
        scalars = x[..., : self.config.channels[0]]  # the 0e channels come first
        correction = (self.energy_mlp(scalars).squeeze(-1)
                      + self.element_energy_eh[species]).sum(-1)
        if self.config.pair_repulsion == "zbl":  # every pair twice in the (i, j), (j, i) list
            z = molecule["numbers"]
            correction = correction + 0.5 * zbl_pair_energy_eh(
                z[pair_src], z[pair_dst], distances).sum(-1)
        outputs["energy_correction_eh"] = correction
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
                                         "dst": dst.to(device), "assembly": assembly,
                                         "numbers": atomic_numbers.to(device)}
        return self._assembly_cache[key]

    def _integrals(self, atomic_numbers: torch.Tensor):
        """PySCF overlap integrals of a molecule (exact_overlap), cached like :meth:`_molecule`."""
        key = tuple(atomic_numbers.tolist())
        if key not in self._overlap_integrals:
            self._overlap_integrals[key] = OverlapIntegrals(key, self.config.basis)
        return self._overlap_integrals[key]

    def _pairs(self, atomic_numbers: torch.Tensor, device):
        """``(pair_src, pair_dst, assembly)`` of :meth:`_molecule`."""
        molecule = self._molecule(atomic_numbers, device)
        return molecule["src"], molecule["dst"], molecule["assembly"]


def reconfigured(model: PhiSNet, **changes) -> PhiSNet:
    """A copy of ``model`` with ``changes`` to its :class:`ModelConfig` that keep its weights:
    ``exact_overlap``, ``energy_model``, ``pair_repulsion``, and ``matrices`` narrowed to a
    subset (the dropped heads' weights are left out). Anything else would need weights the
    model does not have. A new energy model or pair repulsion zeroes the element energies,
    which training then refits."""
    allowed = {"exact_overlap", "energy_model", "pair_repulsion", "matrices"}
    if set(changes) - allowed:
        raise ValueError(f"only {sorted(allowed)} can change on a trained model; got "
                         f"{sorted(set(changes) - allowed)}")
    if model.config.exact_overlap and changes.get("exact_overlap") is False:
        raise ValueError("the model takes S from the integrals and has no trained S head; "
                         "exact_overlap cannot be turned off")
    config = dataclasses.replace(model.config, **changes)
    dropped = set(model.config.matrices) - set(config.matrices)
    if set(config.matrices) - set(model.config.matrices):
        raise ValueError(f"{sorted(set(config.matrices) - set(model.config.matrices))}: the "
                         "model has no trained head for these matrices")
    copy = PhiSNet(config).to(next(model.parameters()).dtype)
    state = {k: v for k, v in model.state_dict().items()
             if not any(k.startswith(f"heads.{name}.") for name in dropped)}
    copy.load_state_dict(state)
    if (config.energy_model, config.pair_repulsion) != (model.config.energy_model,
                                                        model.config.pair_repulsion):
        with torch.no_grad():  # constants of the old energy model; training refits them
            copy.element_energy_eh.zero_()
    return copy


def with_exact_overlap(model: PhiSNet) -> PhiSNet:
    """A copy of ``model`` that takes S from the integrals (``exact_overlap``): the same weights
    without the overlap head's."""
    if model.config.exact_overlap:
        return model
    return reconfigured(model, exact_overlap=True, matrices=tuple(
        name for name in model.config.matrices if name != "overlap"))


def save_model(model: PhiSNet, path, extra: dict | None = None) -> None:
    """Write ``path`` (weights, ``torch.save`` of a state dict) and ``path + '.json'`` (config)."""
    path = os.fspath(path)
    meta = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
            "config": model.config.to_dict(), **(extra or {})}
    torch.save({"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
                "state_dict": model.state_dict()}, path)
    with open(path + ".json", "w") as handle:
        json.dump(meta, handle, indent=2)


def load_model(path, map_location="cpu") -> PhiSNet:
    """Load a model written by :func:`save_model`; clear errors for corrupt or foreign files."""
    path = os.fspath(path)
    try:
        with open(path + ".json") as handle:
            meta = json.load(handle)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: missing config file {path + '.json'}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{path}.json: not valid JSON ({error})") from None
    if meta.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}.json: not an ase-phisnet model (format {meta.get('format')!r})")
    if meta.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format version {meta.get('format_version')}; this "
                             f"ase_phisnet reads version {MODEL_FORMAT_VERSION}")
    try:
        config = ModelConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f"{path}.json: invalid model config ({error})") from None
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
        state = payload["state_dict"]
    except Exception as error:
        raise ModelFileError(f"{path}: unreadable or corrupt weights ({error})") from None
    model = PhiSNet(config)
    dtype = next(iter(state.values())).dtype
    model.to(dtype)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ModelFileError(f"{path}: weights do not match the config ({error})") from None
    return model
