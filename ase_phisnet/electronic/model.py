r"""The model: matrix network, exact integrals, electronic energy, learned remainder and priors.

Atomic units (Eh, Bohr); matrices in PySCF's AO order. This is the one place where the energy
of a geometry is composed:

.. math::

    E(R) = E_{el}[H(R), S(R)] + E_{rem}(R) + E_{prior}(R)

- ``H = H_base + ΔH``: ``ΔH`` from the matrix network :class:`~ase_phisnet.nn.network.PhiSNet`,
  ``H_base = H_core + V_SAP`` exact from PySCF's integrals (``baseline``); ``S`` and ``H_core``
  exact from the integrals too (``exact_overlap``, ``exact_core_hamiltonian``), or predicted
  by heads of the network (the older models);
- ``E_el``: the electronic term of the chosen energy model
  (:data:`~ase_phisnet.electronic.energy.EnergyModelName`), a function of the solution of
  ``H C = S C eps`` (:mod:`ase_phisnet.electronic.energy`);
- ``E_rem``: the learned remainder (:mod:`ase_phisnet.electronic.remainder`): a small MLP of the
  network's invariant atom features, or a message-passing network of its own on the geometry
  and the electronic structure's invariant atom features
  (:mod:`ase_phisnet.electronic.features`), added after the eigensolver;
- ``E_prior``: a fixed pair repulsion (:mod:`ase_phisnet.electronic.priors`), or none.

Forces are ``-dE/dR`` by autograd (:func:`energy_and_forces`), Hessians by double backward
(:func:`hessian`). Files: :mod:`ase_phisnet.electronic.model_file`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from ase_phisnet.core._dataclasses import from_dict_checked
from ase_phisnet.core.core_hamiltonian import CoreHamiltonianIntegrals, exact_core_hamiltonian
from ase_phisnet.core.integrals import OverlapIntegrals, exact_overlap
from ase_phisnet.core.sap import SAP_BASES, SAPBasisName, SAPIntegrals, exact_sap
from ase_phisnet.electronic.eigensolver import ClosedShellSolution
from ase_phisnet.electronic.energy import (
    ENERGY_MODEL_MATRICES,
    EnergyModelName,
    EnergyPrediction,
    check_energy_model,
    energy_from_outputs,
    n_occupied_orbitals,
)
from ase_phisnet.electronic.features import (
    NUM_ELECTRONIC_FEATURES,
    ao_atom_shell_index,
    electronic_atom_features,
)
from ase_phisnet.electronic.priors import (
    DEFAULT_CUTOFF_SCALE,
    PAIR_REPULSIONS,
    PairRepulsionName,
    pair_repulsion_eh,
)
from ase_phisnet.electronic.remainder import REMAINDERS, RemainderName, build_remainder
from ase_phisnet.nn.network import NetworkConfig, PhiSNet
from ase_phisnet.nn.painn import DEFAULT_NORM_EPS

_NETWORK_FIELDS = tuple(field.name for field in dataclasses.fields(NetworkConfig))
#: The ModelConfig fields that define the predicted matrices (the network and its baseline);
#: the others define the energy composed from them.
MATRIX_FIELDS = _NETWORK_FIELDS + ("exact_overlap", "exact_core_hamiltonian", "baseline",
                                   "sap_basis")

#: What the network's H is learned on top of: nothing, the exact core Hamiltonian, or the core
#: Hamiltonian plus the superposition of atomic potentials.
BaselineName = Literal["none", "core", "core_sap"]
BASELINES: tuple[str, ...] = get_args(BaselineName)


@dataclass(frozen=True)
class ModelConfig(NetworkConfig):
    """Hyperparameters of a :class:`PhiSNetModel`; saved beside the weights.

    A :class:`~ase_phisnet.nn.network.NetworkConfig` (basis, elements, channels, max_degree,
    num_layers, num_radial, radial_hidden, cutoff_bohr, avg_neighbors, matrices, tracegrad)
    extended by the fields that say how the energy is composed; one flat dict in files.

    The defaults are the network the learning curves chose (``docs/benchmarks.md``): the
    network predicts only ``ΔH = H - H_core - V_SAP``; S and H_core come from the integrals.
    Model files that do not record a field had its older value
    (:data:`~ase_phisnet.electronic.model_file.UNRECORDED_FIELDS`).

    Attributes:
        matrices: The network's heads (``hamiltonian`` first); as in ``NetworkConfig``, but by
            default H alone.
        exact_overlap: Take S from PySCF's integrals (exact and differentiable twice in the
            positions) instead of predicting it; ``matrices`` must then leave out ``overlap``.
        exact_core_hamiltonian: Take ``H_core = T + V_nuc`` from the integrals likewise;
            ``matrices`` must then leave out ``core_hamiltonian``.
        baseline: ``"core"``: the network's H head predicts ``ΔH = H - H_core`` and the exact
            core Hamiltonian is added (its forces and Hessians exact); ``"core_sap"``:
            ``ΔH = H - H_core - V_SAP``, the superposition of atomic potentials added as well
            (the target's largest elements drop from ~19 Eh to < 1 Eh); ``"none"``: H itself.
        sap_basis: The Gaussian-charge fit of ``V_SAP`` (:data:`~ase_phisnet.core.sap.SAP_BASES`):
            ``sapcompact`` (2-3 Gaussians per element, refit from PySCF's large fit; learns H
            as well as it at equal CPU time, docs/benchmarks.md) or PySCF's ``sapgrasplarge``
            (the default before) or ``sapgraspsmall``. Its integrals cost in proportion to the
            number of Gaussians (ethanol: 21, 63, 36).
        energy_model: The electronic term (:mod:`ase_phisnet.electronic.energy`):
            ``"phisnet"``, ``E_nuc + 1/2 Tr[P (H_core + H)]`` (needs H, S and core H),
            ``"band_structure"``, ``Tr[P H] = 2 sum_occ eps_i`` (needs H and S), or
            ``"none"`` (the electronic structure enters through ``electronic_features``).
        remainder: The learned remainder (:mod:`ase_phisnet.electronic.remainder`):
            ``"atomwise"``, a small MLP of the matrix network's atom features, or
            ``"message_passing"``, a many-body network of its own (PaiNN), trained with the
            matrices frozen (``ase-phisnet train-energy``).
        energy_hidden: Hidden width of the atomwise remainder.
        electronic_features: Feed the message-passing remainder each atom's shell populations
            and band-energy shares (:mod:`ase_phisnet.electronic.features`); without them and
            with ``energy_model="none"`` the energy is a plain MLIP of the geometry.
        remainder_channels, remainder_layers, remainder_radial, remainder_cutoff_bohr,
        remainder_norm_eps: Of the message-passing remainder's
            :class:`~ase_phisnet.nn.painn.PaiNN` (``remainder_norm_eps``: the ``eps`` of its
            soft vector norm, which sets how smooth the energy's curvature is).
        pair_repulsion: ``"zbl"`` adds a fixed short-range screened nuclear repulsion
            (:mod:`ase_phisnet.electronic.priors`): a wall where atoms come closer than a bond,
            which the data do not reach; ``"none"`` adds nothing.
        pair_repulsion_cutoff_scale: Where the prior ends, as a fraction of the pair's covalent
            radii sum (0.75: below the data, away from equilibrium bonds, whose curvature an
            edge at the bond length disturbs).
    """

    matrices: tuple[str, ...] = ("hamiltonian",)
    exact_overlap: bool = True
    exact_core_hamiltonian: bool = True
    baseline: BaselineName = "core_sap"
    sap_basis: SAPBasisName = "sapcompact"
    energy_model: EnergyModelName = "phisnet"
    remainder: RemainderName = "atomwise"
    energy_hidden: int = 32
    electronic_features: bool = True
    remainder_channels: int = 64
    remainder_layers: int = 3
    remainder_radial: int = 16
    remainder_cutoff_bohr: float = 9.0
    remainder_norm_eps: float = DEFAULT_NORM_EPS
    pair_repulsion: PairRepulsionName = "none"
    pair_repulsion_cutoff_scale: float = DEFAULT_CUTOFF_SCALE

    def __post_init__(self):
        super().__post_init__()  # the network's fields
        if self.exact_overlap and "overlap" in self.matrices:
            raise ValueError("exact_overlap takes S from the integrals: leave 'overlap' out of "
                             "matrices")
        if self.exact_core_hamiltonian and "core_hamiltonian" in self.matrices:
            raise ValueError("exact_core_hamiltonian takes H_core from the integrals: leave "
                             "'core_hamiltonian' out of matrices")
        check_energy_model(self.energy_model)
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")
        if self.sap_basis not in SAP_BASES:
            raise ValueError(f"sap_basis must be one of {SAP_BASES}, got {self.sap_basis!r}")
        if self.baseline != "none" and self.tracegrad:
            raise ValueError("tracegrad with a baseline is not supported: its block-norm targets "
                             "are of the full H, the head predicts H - H_base")
        if self.remainder not in REMAINDERS:
            raise ValueError(f"remainder must be one of {REMAINDERS}, got {self.remainder!r}")
        if self.pair_repulsion not in PAIR_REPULSIONS:
            raise ValueError(f"pair_repulsion must be one of {PAIR_REPULSIONS}, got "
                             f"{self.pair_repulsion!r}")
        if not 0.0 < self.pair_repulsion_cutoff_scale <= 1.5:
            raise ValueError("pair_repulsion_cutoff_scale is a fraction of the covalent radii "
                             f"sum in (0, 1.5], got {self.pair_repulsion_cutoff_scale}")
        if self.energy_hidden < 1:
            raise ValueError(f"energy_hidden must be positive, got {self.energy_hidden}")
        if self.energy_model == "none" and self.remainder != "message_passing":
            raise ValueError("energy_model 'none' leaves the energy to the remainder: it needs "
                             "remainder 'message_passing'")
        if min(self.remainder_channels, self.remainder_layers, self.remainder_radial) < 1 \
                or self.remainder_cutoff_bohr <= 0 or self.remainder_norm_eps <= 0:
            raise ValueError("remainder_channels, remainder_layers and remainder_radial must be "
                             "positive, and remainder_cutoff_bohr and remainder_norm_eps > 0")

    @property
    def network(self) -> NetworkConfig:
        """The matrix network's part of this config."""
        return NetworkConfig(**{name: getattr(self, name) for name in _NETWORK_FIELDS})

    @property
    def output_matrices(self) -> frozenset[str]:
        """Matrices the model outputs: the predicted ones, and those from the integrals."""
        return (frozenset(self.matrices) | ({"overlap"} if self.exact_overlap else frozenset())
                | ({"core_hamiltonian"} if self.exact_core_hamiltonian else frozenset()))

    @property
    def exact_matrix_names(self) -> frozenset[str]:
        """The keys of :meth:`PhiSNetModel.exact_matrices`."""
        return (({"overlap"} if self.exact_overlap else frozenset())
                | ({"core_hamiltonian"} if self.exact_core_hamiltonian else frozenset())
                | ({"baseline_hamiltonian"} if self.baseline != "none" else frozenset()))

    @property
    def energy_matrices(self) -> frozenset[str]:
        """Matrices the energy model needs."""
        return frozenset(ENERGY_MODEL_MATRICES[self.energy_model])

    @property
    def uses_electronic_structure(self) -> bool:
        """Whether the energy needs the solution of ``H C = S C eps`` (an electronic term or
        electronic features); a plain-MLIP remainder does not."""
        return self.energy_model != "none" or (self.remainder == "message_passing"
                                               and self.electronic_features)

    @property
    def predicts_energy(self) -> bool:
        """Whether the model outputs every matrix its energy model needs."""
        return self.energy_matrices <= self.output_matrices

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        return from_dict_checked(cls, values)


class PhiSNetModel(nn.Module):
    """The composed model (module docstring).

    ``forward(atomic_numbers, positions_bohr)`` returns the matrices and
    ``"remainder_energy_eh"``; :func:`predict_energy` adds the electronic term.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.network = PhiSNet(config.network)
        self.remainder = build_remainder(
            config.remainder, len(self.network.atomic_numbers),
            atom_features=self.network.num_scalar_features, hidden=config.energy_hidden,
            electronic_features=NUM_ELECTRONIC_FEATURES if config.electronic_features else 0,
            channels=config.remainder_channels, num_layers=config.remainder_layers,
            num_radial=config.remainder_radial, cutoff_bohr=config.remainder_cutoff_bohr,
            norm_eps=config.remainder_norm_eps)
        self._integrals = {}  # (atomic numbers, kind) -> PySCF integrals of that molecule

    # The network's vocabulary, for training and evaluation.
    @property
    def layout(self):
        return self.network.layout

    @property
    def atomic_numbers(self) -> list[int]:
        return self.network.atomic_numbers

    @property
    def heads(self) -> nn.ModuleDict:
        return self.network.heads

    @property
    def tracegrad(self):
        return self.network.tracegrad

    def species(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Model-element index of each atom; raises for elements the model does not know."""
        return self.network.species(atomic_numbers)

    def forward(self, atomic_numbers: torch.Tensor, positions_bohr: torch.Tensor,
                return_invariants: bool = False, twice_differentiable: bool = True,
                exact: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Matrices and the non-electronic energy of one molecule, or of a batch of geometries.

        Args:
            atomic_numbers: (A,) long.
            positions_bohr: (A, 3) or (B, A, 3) float, may require grad.
            return_invariants: also return the TraceGrad predictions.
            twice_differentiable: False (force training only) lets an exact overlap skip its
                second position derivatives (:func:`~ase_phisnet.core.integrals.exact_overlap`):
                the outputs are then differentiable once in the positions, and in the
                parameters through that first derivative; a second derivative in the
                positions (a Hessian) silently misses the d²S/dR² terms.
            exact: :meth:`exact_matrices` at these positions, when they are known (training
                computes them once per geometry); only for positions that do not require
                grad, as they carry no position derivatives.

        Returns:
            ``{"hamiltonian": ([B,] nao, nao) Eh, "overlap": ([B,] nao, nao), ...}`` in PySCF
            AO order, the network's other outputs (:meth:`PhiSNet.forward
            <ase_phisnet.nn.network.PhiSNet.forward>`), and ``"remainder_energy_eh"`` ([B,]):
            the learned remainder plus the pair prior.
        """
        # The network runs in its parameters' dtype; everything else (exact S, the remainder's
        # sum, the prior) in the positions' dtype: a float32 network with float64 positions
        # gets S and dS/dR from the integrals at the exact geometry.
        network_dtype = self.network.embedding.weight.dtype
        outputs = self.network(atomic_numbers, positions_bohr.to(network_dtype),
                               return_invariants)
        species = self.species(atomic_numbers)
        if self.config.remainder == "atomwise":
            energy = self.remainder(species, outputs["atom_scalars"])
        else:  # added after the eigensolver, by remainder_energy (predict_energy)
            energy = outputs["atom_scalars"].new_zeros(positions_bohr.shape[:-2])
        if network_dtype != positions_bohr.dtype:
            outputs = {k: v.to(positions_bohr.dtype) for k, v in outputs.items()}
            energy = energy.to(positions_bohr.dtype)
        if exact is None:
            exact = self.exact_matrices(atomic_numbers, positions_bohr, twice_differentiable)
        elif positions_bohr.requires_grad:
            raise ValueError("precomputed exact matrices have no position derivatives: pass "
                             "exact only for positions that do not require grad")
        elif set(exact) != self.config.exact_matrix_names:
            raise ValueError(f"exact must hold {sorted(self.config.exact_matrix_names)}, got "
                             f"{sorted(exact)}")
        exact = dict(exact)
        if "baseline_hamiltonian" in exact:
            outputs["hamiltonian"] = outputs["hamiltonian"] + exact.pop("baseline_hamiltonian")
        outputs.update(exact)
        if self.config.pair_repulsion != "none":
            src, dst = self.network.pairs(atomic_numbers, positions_bohr.device)
            z = atomic_numbers.to(positions_bohr.device)
            distances = (positions_bohr[..., dst, :] - positions_bohr[..., src, :]).norm(dim=-1)
            energy = energy + pair_repulsion_eh(self.config.pair_repulsion, z[src], z[dst],
                                                distances, self.config.pair_repulsion_cutoff_scale)
        outputs["remainder_energy_eh"] = energy
        return outputs

    def electronic_features(self, atomic_numbers: torch.Tensor, solution: ClosedShellSolution,
                            overlap: torch.Tensor) -> torch.Tensor:
        """``([B,] A, NUM_ELECTRONIC_FEATURES)``: each atom's shell populations and band-energy
        shares (:func:`~ase_phisnet.electronic.features.electronic_atom_features`)."""
        key = tuple(atomic_numbers.tolist())
        if (key, "ao_index") not in self._integrals:
            self._integrals[key, "ao_index"] = ao_atom_shell_index(self.layout, key)
        return electronic_atom_features(solution, overlap, self._integrals[key, "ao_index"],
                                        len(key))

    def remainder_energy(self, atomic_numbers: torch.Tensor, positions_bohr: torch.Tensor,
                         features: torch.Tensor | None) -> torch.Tensor:
        """``([B,])`` Eh: the message-passing remainder at ``positions_bohr`` with the
        electronic ``features`` (``None`` without ``electronic_features``), in the positions'
        dtype."""
        dtype = self.remainder.element_energy_eh.dtype
        energy = self.remainder(self.species(atomic_numbers), positions_bohr.to(dtype),
                                None if features is None else features.to(dtype))
        return energy.to(positions_bohr.dtype)

    def exact_matrices(self, atomic_numbers: torch.Tensor, positions_bohr: torch.Tensor,
                       twice_differentiable: bool = True) -> dict[str, torch.Tensor]:
        """The matrices the model takes from PySCF's integrals at ``positions_bohr``
        (``([B,] A, 3)`` Bohr), each ``([B,] nao, nao)`` and differentiable in the positions
        (``twice_differentiable`` as in :meth:`forward`): ``"overlap"`` (``exact_overlap``),
        ``"core_hamiltonian"`` (Eh, ``exact_core_hamiltonian``) and ``"baseline_hamiltonian"``
        (Eh; ``H_core``, or ``H_core + V_SAP``, by ``baseline``). They depend on the geometry
        alone, so training computes them once per geometry and passes them to
        :meth:`forward`."""
        config, key = self.config, tuple(atomic_numbers.tolist())
        exact = {}
        if config.exact_overlap:
            exact["overlap"] = exact_overlap(self._cached(key, "overlap"), positions_bohr,
                                             twice_differentiable)
        if config.exact_core_hamiltonian or config.baseline != "none":
            core = exact_core_hamiltonian(self._cached(key, "core"), positions_bohr,
                                          twice_differentiable)
            if config.exact_core_hamiltonian:
                exact["core_hamiltonian"] = core
            if config.baseline == "core":
                exact["baseline_hamiltonian"] = core
            elif config.baseline == "core_sap":
                exact["baseline_hamiltonian"] = core + exact_sap(
                    self._cached(key, "sap"), positions_bohr, twice_differentiable)
        return exact

    def _cached(self, atomic_numbers: tuple[int, ...], kind: str):
        """PySCF integrals (``kind``: overlap, core or sap) of a molecule, built once."""
        if (atomic_numbers, kind) not in self._integrals:
            basis = self.config.basis
            self._integrals[atomic_numbers, kind] = (
                OverlapIntegrals(atomic_numbers, basis) if kind == "overlap"
                else CoreHamiltonianIntegrals(atomic_numbers, basis) if kind == "core"
                else SAPIntegrals(atomic_numbers, basis, self.config.sap_basis))
        return self._integrals[atomic_numbers, kind]


def predict_energy(model: PhiSNetModel, atomic_numbers: torch.Tensor,
                   positions_bohr: torch.Tensor, charge: int = 0,
                   derivative_order: int = 2) -> EnergyPrediction:
    """Energy of one geometry ``(A, 3)`` or a batch ``(B, A, 3)`` of one molecule, in Eh.

    The network runs in its parameters' dtype, the rest in the positions' dtype
    (:meth:`PhiSNetModel.forward`): a float32 network with a float64 eigensolver is faster
    and keeps the energy's derivative consistent at the float32 level of the matrices.
    """
    n_occupied = n_occupied_orbitals(atomic_numbers, charge)
    outputs = model(atomic_numbers, positions_bohr)
    prediction = energy_from_outputs(outputs, atomic_numbers, positions_bohr, n_occupied,
                                     derivative_order, model.config.energy_model)
    if model.config.remainder == "message_passing":
        features = (model.electronic_features(atomic_numbers, prediction.solution,
                                              outputs["overlap"])
                    if model.config.electronic_features else None)
        prediction.energy_eh = prediction.energy_eh + model.remainder_energy(
            atomic_numbers, positions_bohr, features)
        prediction.features = features
    return prediction


def energy_and_forces(model: PhiSNetModel, atomic_numbers: torch.Tensor,
                      positions_bohr: torch.Tensor, charge: int = 0,
                      create_graph: bool = False) -> tuple[EnergyPrediction, torch.Tensor]:
    """``(prediction, forces (…, A, 3) in Eh/Bohr)`` with forces ``-dE/dR`` by autograd.

    Without ``create_graph`` the forces are the last derivative taken, so the eigensolver's
    first-order path is used; with it (force training, Hessians) the second-order one.
    """
    positions = positions_bohr.detach().requires_grad_(True)
    with torch.enable_grad():
        prediction = predict_energy(model, atomic_numbers, positions, charge,
                                    derivative_order=2 if create_graph else 1)
        (gradient,) = torch.autograd.grad(prediction.energy_eh.sum(), positions,
                                          create_graph=create_graph)
    return prediction, -gradient


def hessian(model: PhiSNetModel, atomic_numbers: torch.Tensor, positions_bohr: torch.Tensor,
            charge: int = 0) -> torch.Tensor:
    """``d^2E/dR^2`` of one geometry, shape ``(3A, 3A)`` in Eh/Bohr^2, by double backward."""
    positions = positions_bohr.detach().requires_grad_(True)
    with torch.enable_grad():
        energy = predict_energy(model, atomic_numbers, positions, charge).energy_eh
        (gradient,) = torch.autograd.grad(energy, positions, create_graph=True)
        gradient = gradient.reshape(-1)
        rows = [torch.autograd.grad(gradient[k], positions, retain_graph=True)[0].reshape(-1)
                for k in range(gradient.shape[0])]
    matrix = torch.stack(rows)
    return 0.5 * (matrix + matrix.T)


def predict_energies_forces(model: PhiSNetModel, atomic_numbers, positions_bohr,
                            batch_size: int = 10,
                            charge: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(energies (n,) Eh, forces (n, N, 3) Eh/Bohr)`` of ``model`` for geometries of one
    molecule with total ``charge`` (e), as NumPy float64."""
    dtype = next(model.parameters()).dtype
    energies, forces = [], []
    for first in range(0, len(positions_bohr), batch_size):
        xyz = torch.as_tensor(np.asarray(positions_bohr[first:first + batch_size]), dtype=dtype)
        prediction, batch_forces = energy_and_forces(model, atomic_numbers, xyz, charge)
        energies.append(prediction.energy_eh.detach().double().cpu().numpy())
        forces.append(batch_forces.detach().double().cpu().numpy())
    return np.concatenate(energies), np.concatenate(forces)


def reconfigured(model: PhiSNetModel, **changes) -> PhiSNetModel:
    """A copy of ``model`` with ``changes`` to its :class:`ModelConfig` that keep its weights:
    ``exact_overlap``, ``exact_core_hamiltonian``, ``energy_model``, ``pair_repulsion`` and its
    cutoff scale, and ``matrices`` narrowed to a subset (the dropped heads' weights are left
    out). Anything else would need weights the model does not have. A new energy model or pair
    repulsion zeroes the element energies, which training then refits."""
    allowed = {"exact_overlap", "exact_core_hamiltonian", "energy_model", "pair_repulsion",
               "pair_repulsion_cutoff_scale", "matrices"}
    if set(changes) - allowed:
        raise ValueError(f"only {sorted(allowed)} can change on a trained model; got "
                         f"{sorted(set(changes) - allowed)}")
    for flag, matrix in (("exact_overlap", "S"), ("exact_core_hamiltonian", "H_core")):
        if getattr(model.config, flag) and changes.get(flag) is False:
            raise ValueError(f"the model takes {matrix} from the integrals and has no trained "
                             f"head for it; {flag} cannot be turned off")
    config = dataclasses.replace(model.config, **changes)
    dropped = set(model.config.matrices) - set(config.matrices)
    if set(config.matrices) - set(model.config.matrices):
        raise ValueError(f"{sorted(set(config.matrices) - set(model.config.matrices))}: the "
                         "model has no trained head for these matrices")
    reference = next(model.parameters())
    changed = PhiSNetModel(config).to(device=reference.device, dtype=reference.dtype)
    state = {k: v for k, v in model.state_dict().items()
             if not any(k.startswith(f"network.heads.{name}.") for name in dropped)}
    changed.load_state_dict(state)
    energy_settings = ("energy_model", "pair_repulsion", "pair_repulsion_cutoff_scale")
    if any(getattr(config, k) != getattr(model.config, k) for k in energy_settings):
        with torch.no_grad():  # constants of the old energy model; training refits them
            changed.remainder.element_energy_eh.zero_()
    return changed


def with_exact_overlap(model: PhiSNetModel) -> PhiSNetModel:
    """A copy of ``model`` that takes S from the integrals (``exact_overlap``): the same weights
    without the overlap head's (a plain copy if it already does)."""
    if model.config.exact_overlap:
        return copy.deepcopy(model)
    return reconfigured(model, exact_overlap=True, matrices=tuple(
        name for name in model.config.matrices if name != "overlap"))
