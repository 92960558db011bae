r"""Energy training with frozen matrices: a message-passing remainder on cached electronic terms.

Atomic units (Eh, Bohr). A model with ``remainder: message_passing`` composes

.. math::

    E(R) = \underbrace{E_{el}(R) + E_{prior}(R)}_{\text{fixed: } E_0(R)}
           + E_{rem}\big(R, x(R)\big)

where the matrix network is taken from a trained model (``init_from``) and never changes,
so the electronic term ``E_el``, the prior and the electronic atom features ``x(R)``
(:mod:`ase_phisnet.electronic.features`) are fixed functions of the geometry. They are computed
once per distinct training geometry together with their position derivatives
(:func:`cache_electronic`: ``E_0``, ``F_0 = -dE_0/dR`` and the Jacobian ``J = dx/dR``; in
``optim.cache_workers`` processes of one thread each), and training needs no eigensolver in
the loop. The forces of the composed energy are exactly

.. math::

    F = F_0 - \partial_R E_{rem} - (\partial_x E_{rem}) \cdot J

so the remainder trains on energies and forces at the cost of a plain MLIP, and the matrices
stay what matrix training made them: PBE's H, not one bent to fit energies.

The loss is ``w_E <((E - E_ref) / sigma_E)^2> + w_F <((F - F_ref) / sigma_F)^2>`` with the
spreads of the training residuals ``E_ref - E_0`` and ``F_ref - F_0`` (so both terms are
dimensionless), each square a Huber function of the scaled error beyond ``loss.huber_delta``
when that is set (far-from-equilibrium geometries then pull with a bounded gradient). With
``optim.feature_noise`` each training batch's features ``x`` get Gaussian noise of that many
training spreads (the Jacobian ``J`` stays the cached one: the noise shifts the point at which
the remainder is read, not how the features move with the geometry). AdamW,
ReduceLROnPlateau, an EMA of the weights (validated and saved), early stopping, a wall-clock
budget and a checkpoint after every epoch that resumes exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from copy import deepcopy

import numpy as np
import torch
from ase.units import Bohr, Hartree

from ase_phisnet.core.domain import TrainingDomain
from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.electronic.energy import energy_from_outputs, n_occupied_orbitals
from ase_phisnet.electronic.model import MATRIX_FIELDS, ModelConfig, PhiSNetModel
from ase_phisnet.electronic.model_file import load_model, save_model
from ase_phisnet.electronic.remainder import element_energy_offsets_eh
from ase_phisnet.training.config import TrainConfig
from ase_phisnet.training.data import load_matrix_data, matching_dataset, split_of
from ase_phisnet.training.loss import scaled_square_error

logger = logging.getLogger(__name__)
CACHE = "electronic_cache.pt"


@dataclasses.dataclass
class CachedElectronic:
    """The fixed part of the energy at a set of geometries of one molecule (Eh, Bohr)."""

    energy_eh: torch.Tensor  # (N,) E_0: electronic term + prior
    forces_eh_per_bohr: torch.Tensor  # (N, A, 3) F_0 = -dE_0/dR
    features: torch.Tensor | None  # (N, A, X) electronic atom features
    jacobian: torch.Tensor | None  # (N, A, X, A, 3) dx/dR

    def subset(self, index) -> CachedElectronic:
        return CachedElectronic(*(None if t is None else t[index]
                                  for t in dataclasses.astuple(self)))

    @staticmethod
    def concatenate(pieces: list[CachedElectronic]) -> CachedElectronic:
        columns = zip(*(dataclasses.astuple(piece) for piece in pieces))
        return CachedElectronic(*(None if column[0] is None else torch.cat(column)
                                  for column in columns))


def cache_electronic(model: PhiSNetModel, atomic_numbers: torch.Tensor,
                     positions_bohr: torch.Tensor, *, charge: int = 0,
                     progress: bool = False) -> CachedElectronic:
    """``E_0``, ``F_0``, ``x`` and ``dx/dR`` (module docstring) of ``model``'s frozen part at
    each geometry of ``positions_bohr`` ``(N, A, 3)`` of the molecule with total ``charge``
    (e), in float64."""
    from tqdm.auto import tqdm

    model = model.double()
    config = model.config
    n_geometries, n_atoms = positions_bohr.shape[:2]
    energies = torch.zeros(n_geometries, dtype=torch.float64)
    forces = torch.zeros(n_geometries, n_atoms, 3, dtype=torch.float64)
    if not config.uses_electronic_structure and config.pair_repulsion == "none":
        return CachedElectronic(energies, forces, None, None)
    n_occupied = n_occupied_orbitals(atomic_numbers, charge)
    features, jacobians = [], []
    for n in tqdm(range(n_geometries), disable=not progress, desc="electronic terms",
                  unit="geometry"):
        positions = positions_bohr[n].to(torch.float64).detach().requires_grad_(True)
        with torch.enable_grad():
            outputs = model(atomic_numbers, positions, twice_differentiable=False)
            if config.uses_electronic_structure:
                prediction = energy_from_outputs(outputs, atomic_numbers, positions, n_occupied,
                                                 derivative_order=1,
                                                 energy_model=config.energy_model)
                energy = prediction.energy_eh
            else:
                energy = outputs["remainder_energy_eh"]  # the prior alone
            energies[n] = energy.detach()
            if energy.requires_grad:  # not for energy_model "none" without a prior
                (gradient,) = torch.autograd.grad(energy, positions, retain_graph=True)
                forces[n] = -gradient
            if config.electronic_features:
                x = model.electronic_features(atomic_numbers, prediction.solution,
                                              outputs["overlap"])
                rows = [torch.autograd.grad(value, positions, retain_graph=True)[0]
                        for value in x.reshape(-1)]
                features.append(x.detach())
                jacobians.append(torch.stack(rows).reshape(x.shape + (n_atoms, 3)))
    return CachedElectronic(energies, forces,
                            torch.stack(features) if features else None,
                            torch.stack(jacobians) if jacobians else None)


def predicted_energy_forces(model: PhiSNetModel, atomic_numbers, positions_bohr,
                            cached: CachedElectronic, create_graph: bool):
    """``(E (B,), F (B, A, 3))`` of the composed model from the cache (module docstring)."""
    positions = positions_bohr.detach().requires_grad_(True)
    inputs = [positions]
    features = None
    if cached.features is not None:
        features = cached.features.to(positions.dtype).detach().requires_grad_(True)
        inputs.append(features)
    with torch.enable_grad():
        remainder = model.remainder(model.species(atomic_numbers), positions, features)
        gradients = torch.autograd.grad(remainder.sum(), inputs, create_graph=create_graph)
    forces = cached.forces_eh_per_bohr.to(positions.dtype) - gradients[0]
    if features is not None:
        forces = forces - torch.einsum("bax,baxcd->bcd", gradients[1],
                                       cached.jacobian.to(positions.dtype))
    return cached.energy_eh.to(positions.dtype) + remainder, forces


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cache_settings(model: PhiSNetModel, config: TrainConfig, data: dict, charge: int) -> dict:
    """What the cached frozen part depends on: the matrices (the ``init_from`` file's
    contents, not its path, which a retrained stage overwrites), the electronic term and
    features, the pair prior, the charge, and the geometries of each part (their float64
    positions, so another split, data file or ordering of the same size is recomputed)."""
    matrices = None
    if config.init_from:
        with open(config.init_from, "rb") as handle:
            matrices = _sha256(handle.read())
    return {"init_from": config.init_from, "init_from_sha256": matrices,
            "energy_model": model.config.energy_model,
            "electronic_features": model.config.electronic_features,
            "pair_repulsion": model.config.pair_repulsion,
            "pair_repulsion_cutoff_scale": model.config.pair_repulsion_cutoff_scale,
            "charge": charge,
            "sizes": {name: len(part[1]) for name, part in data.items()},
            "positions_sha256": {
                name: _sha256(part[0].to(torch.float64).contiguous().numpy().tobytes())
                for name, part in data.items()}}


def _model_for_energy(config: TrainConfig, dataset: HamiltonianDataset) -> PhiSNetModel:
    """The model to train: the matrices of ``init_from`` with a fresh message-passing
    remainder (``config.model`` says its settings); or, for a plain MLIP (energy_model
    ``none`` without electronic features), a fresh model whose matrices are never used."""
    if config.init_from:
        matrices = load_model(config.init_from)
        # the remainder is new: its settings are config.model's or today's defaults, never
        # those recorded in the matrices' file
        values = {k: v for k, v in matrices.config.to_dict().items()
                  if not k.startswith(("remainder_", "pair_repulsion"))}
        values.update(config.model)
        requested = ModelConfig.from_dict(values)
        changed = [name for name in MATRIX_FIELDS
                   if getattr(requested, name) != getattr(matrices.config, name)]
        if changed:
            raise ValueError(
                f"model.{', model.'.join(changed)} would change the frozen matrices of "
                f"{config.init_from} (the energy stage trains the remainder only): leave "
                "them out of the energy stage's model section")
    else:
        from ase.data import chemical_symbols

        numbers = sorted(set(dataset[0].atomic_numbers.tolist()))
        values = {"basis": dataset.metadata.theory.basis,
                  "elements": [chemical_symbols[z] for z in numbers], **config.model}
        matrices = None
    model_config = ModelConfig.from_dict(values)
    if model_config.remainder != "message_passing":
        raise ValueError("energy training with frozen matrices needs model.remainder: "
                         "message_passing")
    if model_config.uses_electronic_structure and matrices is None:
        raise ValueError("an electronic term or electronic features need trained matrices: set "
                         "init_from to a model trained on matrices")
    model = PhiSNetModel(model_config).double()
    if matrices is not None:
        model.network.load_state_dict(matrices.network.state_dict(), strict=True)
    for parameter in model.network.parameters():
        parameter.requires_grad_(False)
    return model


@torch.no_grad()
def with_refitted_constants(model: PhiSNetModel, species, positions_bohr, energy_eh,
                            cached: CachedElectronic) -> PhiSNetModel:
    """A copy of ``model`` whose element constants are refitted by least squares (float64) to
    the training energies ``energy_eh (N,)`` (``species``: the model's species index of each
    atom; ``positions_bohr`` and ``cached``: the same geometries). A constant offset leaves the
    forces unchanged, and fitting it within the loss is slow (the optimizer moves each
    constant by about one learning rate per step; measured: a 2 meV offset beside 1 meV/Å
    forces on water)."""
    copy = deepcopy(model)
    dtype = copy.remainder.element_energy_eh.dtype
    features = None if cached.features is None else cached.features.to(dtype)
    # energies only: no force graph is needed to fit a constant
    predicted = cached.energy_eh + copy.remainder(species, positions_bohr.to(dtype),
                                                  features).double()
    shift = element_energy_offsets_eh(species.numpy(), len(copy.atomic_numbers),
                                      (energy_eh - predicted).numpy())
    element_energy = copy.remainder.element_energy_eh
    element_energy.copy_((element_energy.double() + torch.as_tensor(shift)).to(
        element_energy.dtype))
    return copy


def _cache_all(model, config: TrainConfig, atomic_numbers, parts: dict[str, list], *,
               charge: int, progress: bool) -> dict[str, CachedElectronic]:
    """The cache of each list of ``parts`` (its parts' caches concatenated) of the molecule
    with total ``charge`` (e), every distinct part computed once (an oversampled part enters a
    list several times as the same object), spread over ``optim.cache_workers`` processes."""
    distinct = {}
    for part_list in parts.values():
        for part in part_list:
            distinct.setdefault(id(part), part)
    positions = torch.cat([part[1] for part in distinct.values()])
    workers = min(config.optim.cache_workers, len(positions))
    if workers <= 1:
        computed = cache_electronic(model, atomic_numbers, positions, charge=charge,
                                    progress=progress)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        logger.info("electronic terms of %d geometries in %d processes", len(positions),
                    workers)
        chunks = positions.tensor_split(workers)
        # spawn, not fork: a forked child inherits torch's and OpenMP's thread state
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            pieces = list(pool.map(_cache_in_worker, [config.to_dict()] * workers,
                                   [atomic_numbers] * workers, chunks, [charge] * workers))
        computed = CachedElectronic.concatenate(pieces)
    offsets = np.cumsum([0] + [len(part[1]) for part in distinct.values()])
    per_part = {key: computed.subset(slice(int(offsets[i]), int(offsets[i + 1])))
                for i, key in enumerate(distinct)}
    return {name: CachedElectronic.concatenate([per_part[id(part)] for part in part_list])
            for name, part_list in parts.items()}


def _cache_in_worker(config_values: dict, atomic_numbers, positions_bohr,
                     charge: int) -> CachedElectronic:
    """:func:`cache_electronic` in a worker process, on one thread, with the frozen part of the
    model that ``config_values`` (a :class:`TrainConfig` as a dict) trains."""
    torch.set_num_threads(1)
    config = TrainConfig.from_dict(config_values)
    dataset = HamiltonianDataset(config.dataset)
    try:
        model = _model_for_energy(config, dataset)
    finally:
        dataset.close()
    return cache_electronic(model, atomic_numbers, positions_bohr, charge=charge)


def _load_part(dataset, indices):
    data = load_matrix_data(dataset, indices, [])
    return data.atomic_numbers, data.positions_bohr, data.energy_eh, data.forces_eh_per_bohr


def train_energy(config: TrainConfig, progress: bool = True):
    """Train the message-passing remainder of ``config`` on energies and forces with the
    matrices frozen (module docstring); resumes from ``output_dir``'s checkpoint. Called by
    :func:`~ase_phisnet.training.loop.train` inside its session (log file, seeded RNG)."""
    from tqdm.auto import tqdm

    from ase_phisnet.training.loop import (
        BEST_MODEL,
        CHECKPOINT,
        TrainResult,
        _save_checkpoint,
        _training_metadata,
        load_checkpoint,
        new_optimization,
        plot_learning_curve,
    )

    if config.loss.energy <= 0 and config.loss.forces <= 0:
        raise ValueError("energy training needs loss.energy or loss.forces > 0")
    opt = config.optim
    dataset = HamiltonianDataset(config.dataset)
    split = split_of(dataset, config.split)
    charge = dataset.metadata.theory.charge
    model = _model_for_energy(config, dataset)
    parts = {"train": [_load_part(dataset, split.train)],
             "validation": [_load_part(dataset, split.validation)]}
    extra_splits = []
    for extra in config.extra_data:
        extra_dataset = matching_dataset(extra.dataset, dataset)
        extra_split = split_of(extra_dataset, extra.split)
        parts["train"] += [_load_part(extra_dataset, extra_split.train)] * extra.repeat
        if len(extra_split.validation):  # an extra file may train only (n_validation: 0)
            parts["validation"].append(_load_part(extra_dataset, extra_split.validation))
        extra_splits.append((extra, extra_dataset, extra_split))
        extra_dataset.close()
    dataset.close()
    z = parts["train"][0][0]
    data = {name: [torch.cat([p[k] for p in part]) for k in range(1, 4)]
            for name, part in parts.items()}

    cache_path = os.path.join(config.output_dir, CACHE)
    settings = _cache_settings(model, config, data, charge)
    stored = torch.load(cache_path, weights_only=True) if os.path.exists(cache_path) else None
    if stored is not None and stored.get("settings") == settings:
        cache = {name: CachedElectronic(*stored[name]) for name in data}
    else:
        if stored is not None:
            logger.warning("%s was computed for other settings (%s, now %s); recomputing",
                           cache_path, stored.get("settings"), settings)
        cache = _cache_all(model, config, z, parts, charge=charge, progress=progress)
        torch.save({"settings": settings,
                    **{name: dataclasses.astuple(c) for name, c in cache.items()}}, cache_path)
    dtype = getattr(torch, opt.dtype)

    train_positions, train_energy, train_forces = data["train"]
    residual_energy = train_energy - cache["train"].energy_eh
    residual_forces = train_forces - cache["train"].forces_eh_per_bohr
    sigma_e = float(residual_energy.std()) or 1.0
    sigma_f = float(residual_forces.pow(2).mean().sqrt()) or 1.0
    species = model.species(z)
    resuming = os.path.exists(os.path.join(config.output_dir, CHECKPOINT))
    if not resuming:
        model.remainder.set_statistics(species, cache["train"].features, sigma_f)
        constants = element_energy_offsets_eh(species.numpy(), len(model.atomic_numbers),
                                              residual_energy.numpy())
        with torch.no_grad():
            model.remainder.element_energy_eh.copy_(torch.as_tensor(constants))
    model.to(dtype)
    logger.info("energy training, matrices frozen: %d training, %d validation geometries; "
                "residual spreads %.3g mEh, %.3g mEh/Bohr", len(train_energy),
                len(data["validation"][1]), 1e3 * sigma_e, 1e3 * sigma_f)

    parameters = list(model.remainder.parameters())
    optimizer, scheduler, ema, generator, state = new_optimization(model, parameters, opt,
                                                                   config.seed)
    checkpoint_path = os.path.join(config.output_dir, CHECKPOINT)
    if resuming:
        checkpoint = torch.load(checkpoint_path, weights_only=False)
        state = load_checkpoint(checkpoint, model, ema, optimizer, scheduler, generator)
        logger.info("resumed from %s at epoch %d", checkpoint_path, state["epoch"])

    def terms(energy, forces, energy_ref, forces_ref):
        delta = config.loss.huber_delta
        e = scaled_square_error(energy, energy_ref.to(dtype), sigma_e, delta)
        f = scaled_square_error(forces, forces_ref.to(dtype), sigma_f, delta)
        loss = config.loss.energy * e + config.loss.forces * f
        return loss, float(e.detach()), float(f.detach())

    n_main_validation = len(parts["validation"][0][1])  # the main file's come first

    def validation_metrics(module):
        positions, energy_ref, forces_ref = data["validation"]
        energy, forces = predicted_energy_forces(module, z, positions.to(dtype),
                                                 cache["validation"], create_graph=False)
        energy, forces = energy.detach(), forces.detach()
        chosen = slice(None) if opt.select_on == "all" else slice(0, n_main_validation)
        loss, _, _ = terms(energy[chosen], forces[chosen], energy_ref[chosen],
                           forces_ref[chosen])
        metrics = {}
        for name, rows in (("", slice(None)), ("main_", slice(0, n_main_validation))):
            energy_mae = float((energy[rows].double() - energy_ref[rows]).abs().mean())
            forces_mae = float((forces[rows].double() - forces_ref[rows]).abs().mean())
            metrics[f"{name}energy_mae_meV"] = 1000 * Hartree * energy_mae
            metrics[f"{name}forces_mae_meV_per_A"] = 1000 * Hartree / Bohr * forces_mae
        return float(loss), metrics

    domain = TrainingDomain.from_geometries(z.numpy(), train_positions.numpy() * Bohr)
    start = time.perf_counter()
    bar = tqdm(total=opt.max_epochs, initial=state["epoch"], disable=not progress,
               desc="train energy", unit="epoch")
    stop_reason = "max_epochs"
    if state["stale_epochs"] >= opt.early_stopping_patience:
        stop_reason = "early stopping"
    # optim.feature_noise in each atom's feature units: that many training spreads
    noise_scale = (opt.feature_noise * model.remainder.feature_std[species].double()
                   if opt.feature_noise and cache["train"].features is not None else None)
    while state["epoch"] < opt.max_epochs and stop_reason != "early stopping":
        epoch_start = time.perf_counter()
        order = torch.randperm(len(train_energy), generator=generator)
        sums = np.zeros(2)
        for first in range(0, len(order), opt.batch_size):
            index = order[first:first + opt.batch_size]
            cached = cache["train"].subset(index)
            if noise_scale is not None:
                noise = torch.randn(cached.features.shape, generator=generator,
                                    dtype=torch.float64)
                cached = dataclasses.replace(cached,
                                             features=cached.features + noise_scale * noise)
            energy, forces = predicted_energy_forces(
                model, z, train_positions[index].to(dtype), cached, True)
            loss, e, f = terms(energy, forces, train_energy[index], train_forces[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, opt.grad_clip)
            optimizer.step()
            ema.update_parameters(model)
            sums += (e, f)
        averaged = with_refitted_constants(ema.module, species, train_positions, train_energy,
                                           cache["train"])
        validation, metrics = validation_metrics(averaged)
        scheduler.step(validation)
        state["epoch"] += 1
        state["train_time_s"] += time.perf_counter() - epoch_start
        batches = math.ceil(len(order) / opt.batch_size)
        record = {"epoch": state["epoch"], "validation_loss": validation,
                  "learning_rate": optimizer.param_groups[0]["lr"],
                  "train_energy": sums[0] / batches, "train_forces": sums[1] / batches,
                  **{f"validation_{k}": v for k, v in metrics.items()}}
        state["history"].append(record)
        if validation < state["best_loss"]:
            state.update(best_loss=validation, best_epoch=state["epoch"], stale_epochs=0)
            save_model(averaged, os.path.join(config.output_dir, BEST_MODEL),
                       extra=_training_metadata(config, dataset, state, split, domain,
                                                extra_splits))
        else:
            state["stale_epochs"] += 1
        _save_checkpoint(checkpoint_path, config, model, ema, optimizer, scheduler, generator,
                         state)
        logger.info("epoch %d: %s", state["epoch"], json.dumps(record))
        bar.set_postfix(E=f"{metrics['energy_mae_meV']:.2f}",
                        F=f"{metrics['forces_mae_meV_per_A']:.1f}")
        bar.update(1)
        if state["stale_epochs"] >= opt.early_stopping_patience:
            stop_reason = "early stopping"
        elif opt.max_time_minutes and time.perf_counter() - start > 60 * opt.max_time_minutes:
            stop_reason = "time budget"
            break
    bar.close()
    logger.info("stopped (%s) after %d epochs; best validation loss %.4g at epoch %d",
                stop_reason, state["epoch"], state["best_loss"], state["best_epoch"])
    plot_learning_curve(state["history"], os.path.join(config.output_dir, "learning_curve.png"))
    return TrainResult(os.path.join(config.output_dir, BEST_MODEL), state["best_loss"],
                       state["epoch"], state["train_time_s"], state["history"], stop_reason)
