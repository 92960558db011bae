"""Training of PhiSNet on a reference dataset.

Loss (all terms dimensionless, each matrix scaled by the standard deviation ``sigma`` of its
reference elements in the training split)::

    L = sum_M w_M [ mean((M_pred - M_ref)^2) / sigma_M^2 + mean|M_pred - M_ref| / sigma_M ]
        + w_eps [ same for the occupied (and loss.virtual_orbitals lowest virtual) orbital
                  energies of H C = S C eps ]
        + w_tg  [ same for the TraceGrad invariants |H_b|_F of every atom and pair block ]
        + w_E, w_F [ same for the total energy and the forces of the energy model; with
                     loss.huber_delta > 0 the square is a Huber function, linear far out ]
        + w_mu  [ same for the dipole moment sum_A Z_A R_A - Tr[P r] of the predicted P ]

The dipole term ties the density matrix to the reference where end-to-end energy training
would otherwise let H and core H drift into a latent pair that fits energies with the wrong
density (the dipole depends on P alone).

AdamW or AMSGrad, ReduceLROnPlateau on the validation loss, an exponential moving average (EMA)
of the weights (validated and saved), gradient clipping, early stopping, and a checkpoint after
every epoch that resumes exactly (weights, EMA, optimizer, scheduler, RNG, history). Runs on CUDA
when present and under ``torchrun`` with DistributedDataParallel.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, fields

import numpy as np
import torch

from ase_phisnet.core.errors import PhiSNetError
from ase_phisnet.core.integrals import position_integrals
from ase_phisnet.data.dataset import DatasetSplit, HamiltonianDataset
from ase_phisnet.electronic.eigensolver import orthogonalized, solve_closed_shell
from ase_phisnet.electronic.energy import energy_from_outputs
from ase_phisnet.electronic.model import ModelConfig, PhiSNetModel, reconfigured
from ase_phisnet.electronic.model_file import load_model, save_model
from ase_phisnet.electronic.observables import charge_center_bohr, dipole_moment_e_bohr
from ase_phisnet.training.config import TrainConfig

logger = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
BEST_MODEL = "best_model.pt"


@dataclass
class MatrixData:
    """Reference tensors of a set of geometries of one molecule (atomic units)."""

    atomic_numbers: torch.Tensor  # (A,)
    positions_bohr: torch.Tensor  # (N, A, 3)
    matrices: dict[str, torch.Tensor]  # name -> (N, nao, nao)
    occupied_energies_eh: torch.Tensor  # (N, n_occ)
    energy_eh: torch.Tensor  # (N,)
    forces_eh_per_bohr: torch.Tensor  # (N, A, 3)
    dipole_e_bohr: torch.Tensor  # (N, 3), origin at 0
    position_integrals: torch.Tensor | None = None  # (N, 3, nao, nao) <r - R_c>, for dipoles
    virtual_energies_eh: torch.Tensor | None = None  # (N, k) lowest virtual orbital energies

    def __len__(self):
        return self.positions_bohr.shape[0]

    def subset(self, index: torch.Tensor) -> MatrixData:
        return self._map(lambda tensor: tensor[index], self.atomic_numbers)

    def to(self, device, dtype) -> MatrixData:
        return self._map(lambda tensor: tensor.to(device, dtype), self.atomic_numbers.to(device))

    def _map(self, function, atomic_numbers) -> MatrixData:
        """The same data with ``function`` applied to every per-geometry tensor."""
        values = {}
        for field in fields(self)[1:]:  # all but atomic_numbers
            value = getattr(self, field.name)
            values[field.name] = (None if value is None
                                  else {k: function(v) for k, v in value.items()}
                                  if isinstance(value, dict) else function(value))
        return MatrixData(atomic_numbers, **values)


def concatenate(parts: list[MatrixData]) -> MatrixData:
    """The geometries of several :class:`MatrixData` of one molecule, in order."""
    first = parts[0]
    if any(not torch.equal(p.atomic_numbers, first.atomic_numbers) for p in parts):
        raise ValueError("only data of one molecule (same atoms in the same order) can be joined")
    if len(parts) == 1:
        return first
    values = {}
    for field in fields(first)[1:]:  # all but atomic_numbers
        items = [getattr(p, field.name) for p in parts]
        if isinstance(items[0], dict):
            values[field.name] = {k: torch.cat([item[k] for item in items]) for k in items[0]}
        else:
            values[field.name] = None if items[0] is None else torch.cat(items)
    return MatrixData(first.atomic_numbers, **values)


_RECORD_FIELD = {"hamiltonian": "hamiltonian_eh", "overlap": "overlap",
                 "core_hamiltonian": "core_hamiltonian_eh"}


def load_matrix_data(dataset: HamiltonianDataset, positions, names,
                     with_position_integrals: bool = False, n_virtual: int = 0) -> MatrixData:
    """Read records at ``positions`` of ``dataset`` into float64 tensors; with
    ``with_position_integrals`` also ``<μ| r - R_c |ν>`` of each geometry (dipole loss,
    :func:`~ase_phisnet.core.integrals.position_integrals`); ``n_virtual``: also the energies of the
    lowest ``n_virtual`` virtual orbitals."""
    records = [dataset[int(p)] for p in positions]
    if not records:
        raise ValueError("no records selected")
    numbers = records[0].atomic_numbers
    if any(not np.array_equal(r.atomic_numbers, numbers) for r in records):
        raise ValueError("training needs records of one molecule (same atoms in the same order)")
    occupied = [r.orbital_energies_eh[r.occupations > 0] for r in records]
    return MatrixData(
        atomic_numbers=torch.as_tensor(numbers, dtype=torch.long),
        positions_bohr=torch.as_tensor(np.stack([r.positions_bohr for r in records])),
        matrices={name: torch.as_tensor(np.stack([getattr(r, _RECORD_FIELD[name])
                                                  for r in records])) for name in names},
        occupied_energies_eh=torch.as_tensor(np.stack(occupied)),
        energy_eh=torch.as_tensor(np.array([r.energy_eh for r in records])),
        forces_eh_per_bohr=torch.as_tensor(np.stack([r.forces_eh_per_bohr for r in records])),
        dipole_e_bohr=torch.as_tensor(np.stack([r.dipole_e_bohr for r in records])),
        position_integrals=torch.as_tensor(position_integrals(
            numbers, [r.positions_bohr for r in records], dataset.metadata.theory.basis))
        if with_position_integrals else None,
        virtual_energies_eh=torch.as_tensor(np.stack([
            r.orbital_energies_eh[r.occupations == 0][:n_virtual] for r in records]))
        if n_virtual else None,
    )


def block_norms(matrix: torch.Tensor, model: PhiSNetModel, atomic_numbers) -> tuple:
    """``|M_b|_F`` of every atom block (B, A) and directed pair block (B, P) of ``(B, nao, nao)``."""
    slices = model.layout.ao_slices(atomic_numbers.tolist())
    indicator = torch.zeros(matrix.shape[-1], len(slices), dtype=matrix.dtype,
                            device=matrix.device)
    for atom, ao in enumerate(slices):
        indicator[ao, atom] = 1.0
    squared = indicator.T @ matrix.pow(2) @ indicator  # (B, A, A)
    src, dst = model.network.pairs(atomic_numbers, matrix.device)
    norms = squared.clamp_min(0).sqrt()
    return torch.diagonal(norms, dim1=1, dim2=2), norms[:, src, dst]


def lowest_orbital_energies(hamiltonian, overlap, n_orbitals: int) -> torch.Tensor:
    """Lowest ``n_orbitals`` eigenvalues of ``H C = S C eps`` via Cholesky, differentiable."""
    orthogonal = orthogonalized(hamiltonian, torch.linalg.cholesky(overlap))
    return torch.linalg.eigvalsh(orthogonal)[..., :n_orbitals]


def _scaled_error(prediction, reference, sigma, huber_delta: float = 0.0):
    """``mean(x^2) + mean|x|`` of the scaled error ``x = (prediction - reference) / sigma``;
    with ``huber_delta > 0`` the square is ``2 huber(x, huber_delta)`` (linear beyond delta)."""
    scaled = (prediction - reference) / sigma
    if huber_delta > 0:
        square = 2 * torch.nn.functional.huber_loss(scaled, torch.zeros_like(scaled),
                                                    delta=huber_delta)
    else:
        square = scaled.pow(2).mean()
    return square + scaled.abs().mean()


def compute_loss(model, batch: MatrixData, weights, scales: dict[str, float]):
    """Total loss and its terms for one batch (see module docstring)."""
    want_traces = _unwrap(model).tracegrad is not None and weights.tracegrad > 0
    want_forces = weights.forces > 0
    positions = batch.positions_bohr
    if want_forces:
        positions = positions.detach().requires_grad_(True)
    # Forces are the only derivative in the positions taken here: the loss's backward needs
    # second derivatives in the parameters, never in the positions.
    out = model(batch.atomic_numbers, positions, return_invariants=want_traces,
                twice_differentiable=False)
    terms = {}
    for name, reference in batch.matrices.items():
        terms[name] = _scaled_error(out[name], reference, scales[name])
    if weights.orbital_energies > 0:
        reference = batch.occupied_energies_eh
        if batch.virtual_energies_eh is not None:
            reference = torch.cat([reference, batch.virtual_energies_eh], dim=-1)
        overlap = out.get("overlap", batch.matrices.get("overlap"))
        eps = lowest_orbital_energies(out["hamiltonian"], overlap, reference.shape[-1])
        terms["orbital_energies"] = _scaled_error(eps, reference, scales["orbital_energies"])
    solution = None
    if weights.energy > 0 or want_forces:
        n_occ = batch.occupied_energies_eh.shape[-1]
        prediction = energy_from_outputs(out, batch.atomic_numbers, positions, n_occ,
                                         energy_model=_unwrap(model).config.energy_model)
        energy, solution = prediction.energy_eh, prediction.solution
        terms["energy"] = _scaled_error(energy, batch.energy_eh, scales["energy"],
                                        weights.huber_delta)
        if want_forces:
            (gradient,) = torch.autograd.grad(energy.sum(), positions, create_graph=True)
            terms["forces"] = _scaled_error(-gradient, batch.forces_eh_per_bohr,
                                            scales["forces"], weights.huber_delta)
    if weights.dipole > 0:
        if batch.position_integrals is None:
            raise ValueError("a dipole loss needs the data loaded with_position_integrals")
        if solution is None:
            overlap = out.get("overlap", batch.matrices.get("overlap"))
            solution = solve_closed_shell(out["hamiltonian"], overlap,
                                          batch.occupied_energies_eh.shape[-1],
                                          derivative_order=1)
        # About the centre of nuclear charge R_c (position_integrals); the reference is about
        # 0, and mu(R_c) = mu(0) - Q R_c for net charge Q.
        center = charge_center_bohr(batch.atomic_numbers, positions.detach())
        dipole = dipole_moment_e_bohr(solution.density_matrix, batch.position_integrals,
                                      batch.atomic_numbers, positions, origin_bohr=center)
        net_charge = int(batch.atomic_numbers.sum()) - 2 * batch.occupied_energies_eh.shape[-1]
        terms["dipole"] = _scaled_error(dipole, batch.dipole_e_bohr - net_charge * center,
                                        scales["dipole"])
    if want_traces:
        atom_ref, pair_ref = block_norms(batch.matrices["hamiltonian"], _unwrap(model),
                                         batch.atomic_numbers)
        terms["tracegrad"] = (_scaled_error(out["trace_atom"], atom_ref, scales["trace"])
                              + _scaled_error(out["trace_pair"], pair_ref, scales["trace"]))
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def loss_scales(model: PhiSNetModel, train: MatrixData) -> dict[str, float]:
    """Standard deviations of the training references that make each loss term dimensionless."""
    scales = {name: float(matrices.std()) for name, matrices in train.matrices.items()}
    scales["orbital_energies"] = float(train.occupied_energies_eh.std())
    scales["energy"] = max(float(train.energy_eh.std()), 1e-4)
    scales["forces"] = float(train.forces_eh_per_bohr.std())
    scales["dipole"] = max(float(train.dipole_e_bohr.std()), 1e-3)
    atom_norms, pair_norms = block_norms(train.matrices["hamiltonian"], model,
                                         train.atomic_numbers)
    scales["trace"] = float(torch.cat([atom_norms.ravel(), pair_norms.ravel()]).std())
    return scales


def fit_onsite_offsets(model: PhiSNetModel, train: MatrixData) -> None:
    """Set the predicted heads' on-site offsets to the training mean of the diagonal blocks."""
    numbers = train.atomic_numbers.tolist()
    slices = model.layout.ao_slices(numbers)
    for name, matrices in train.matrices.items():
        if name == "overlap":  # its on-site blocks are exact constants
            continue
        means = {z: torch.cat([matrices[:, s, s] for s, zz in zip(slices, numbers) if zz == z])
                 .mean(0) for z in set(numbers)}
        model.heads[name].set_onsite_offset(means)


@torch.no_grad()
def fit_element_energies(model: PhiSNetModel, train: MatrixData, batch_size: int = 32) -> None:
    """Least-squares element constants ``e_Z`` so the model's mean energy error starts at zero."""
    n_occ = train.occupied_energies_eh.shape[-1]
    model.remainder.element_energy_eh.zero_()
    residuals = []
    for first in range(0, len(train), batch_size):
        batch = train.subset(torch.arange(first, min(first + batch_size, len(train))))
        out = model(batch.atomic_numbers, batch.positions_bohr)
        try:
            predicted = energy_from_outputs(out, batch.atomic_numbers, batch.positions_bohr,
                                            n_occ, energy_model=model.config.energy_model)
        except PhiSNetError as error:
            raise ValueError(
                f"energy/force training needs sensible predicted matrices ({error}); train the "
                "matrices first (loss.energy = loss.forces = 0), then fine-tune that model "
                "with init_from") from None
        residuals.append(batch.energy_eh - predicted.energy_eh)
    residual = torch.cat(residuals).double().cpu().numpy()
    species = model.species(train.atomic_numbers).cpu().numpy()
    counts = np.bincount(species, minlength=len(model.atomic_numbers)).astype(float)
    solution, *_ = np.linalg.lstsq(np.tile(counts, (len(residual), 1)), residual, rcond=None)
    model.remainder.element_energy_eh.copy_(torch.as_tensor(solution))


def _check_orbital_terms(config: TrainConfig, model: PhiSNetModel) -> None:
    """Loss terms that solve ``H C = S C eps`` need H and an S (predicted or exact)."""
    wanted = [name for name in ("orbital_energies", "dipole") if getattr(config.loss, name) > 0]
    has = model.config.output_matrices
    if wanted and not {"hamiltonian", "overlap"} <= has:
        raise ValueError(f"loss terms {wanted} need a model that predicts H and S (or takes S "
                         f"from the integrals, model.exact_overlap); this one has {sorted(has)}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _distributed():
    """(rank, world_size), initializing torch.distributed under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


@dataclass
class TrainResult:
    best_model_path: str
    best_validation_loss: float
    epochs: int
    wall_time_s: float
    history: list


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train (or resume training) as ``config`` says; returns where the best model is."""
    from tqdm.auto import tqdm

    rank, world = _distributed()
    os.makedirs(config.output_dir, exist_ok=True)
    if rank == 0:
        _attach_log_file(os.path.join(config.output_dir, "train.log"))
    opt = config.optim
    dtype = getattr(torch, opt.dtype)
    device = resolve_device(opt.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.manual_seed(config.seed)

    dataset = HamiltonianDataset(config.dataset)
    split = _split(dataset, config.split)
    model = _build_model(config, dataset, dtype)
    _check_orbital_terms(config, model)
    names = list(model.config.matrices)
    dipoles = config.loss.dipole > 0
    n_virtual = config.loss.virtual_orbitals
    train_parts = [load_matrix_data(dataset, split.train, names, dipoles, n_virtual)]
    valid_parts = [load_matrix_data(dataset, split.validation, names, dipoles, n_virtual)]
    dataset.close()  # all in memory now; the generator may still be appending to the file
    extra_splits = []
    for extra in config.extra_data:
        extra_dataset = _matching_dataset(extra.dataset, dataset)
        extra_split = _split(extra_dataset, extra.split)
        train_part = load_matrix_data(extra_dataset, extra_split.train, names, dipoles,
                                      n_virtual)
        train_parts.extend([train_part] * extra.repeat)
        valid_parts.append(load_matrix_data(extra_dataset, extra_split.validation, names,
                                            dipoles, n_virtual))
        extra_splits.append((extra, extra_dataset, extra_split))
        extra_dataset.close()
    train_data, valid_data = concatenate(train_parts), concatenate(valid_parts)
    logger.info("%d training (repeats counted) and %d validation geometries from %d file(s)",
                len(train_data), len(valid_data), 1 + len(config.extra_data))
    # The main file sets the loss scales: extra files (hot, stretched bonds) would widen the
    # spreads and so weaken every term on the geometries the model is for.
    scales = loss_scales(model, train_parts[0])
    shortest_distance = min_distance_bohr(train_data.positions_bohr)
    if not config.init_from:
        fit_onsite_offsets(model, train_data)
    wants_energy = config.loss.energy > 0 or config.loss.forces > 0
    if wants_energy and not bool(model.remainder.element_energy_eh.detach().any()):
        fit_element_energies(model, train_data.to("cpu", dtype))  # fresh or H-only model
    model.to(device=device, dtype=dtype)
    train_data, valid_data = train_data.to(device, dtype), valid_data.to(device, dtype)

    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=opt.learning_rate,
                                  weight_decay=opt.weight_decay,
                                  amsgrad=opt.optimizer == "amsgrad")
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=opt.lr_decay_factor, patience=opt.lr_patience,
        min_lr=opt.min_learning_rate)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(opt.ema_decay),
        use_buffers=True)
    generator = torch.Generator().manual_seed(config.seed)
    state = {"epoch": 0, "best_loss": math.inf, "best_epoch": -1, "stale_epochs": 0,
             "history": [], "train_time_s": 0.0}
    checkpoint_path = os.path.join(config.output_dir, CHECKPOINT)
    if os.path.exists(checkpoint_path):
        checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=False)
        if checkpoint["config"] != config.to_dict():
            logger.warning("resuming with a changed config; the checkpoint's run continues")
        model.load_state_dict(checkpoint["model"])
        ema.load_state_dict(checkpoint["ema"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        generator.set_state(checkpoint["generator"])
        state = checkpoint["state"]
        logger.info("resumed from %s at epoch %d", checkpoint_path, state["epoch"])
        if state.get("n_validation", len(valid_data)) != len(valid_data):
            # The data file grew (an over_plan split of a file still being generated): losses
            # on the new validation set are not comparable with the old best.
            logger.info("validation set changed (%d -> %d records): best loss reset",
                        state["n_validation"], len(valid_data))
            state.update(best_loss=math.inf, stale_epochs=0)
            scheduler.best, scheduler.num_bad_epochs = math.inf, 0
    state["n_validation"] = len(valid_data)  # compared on the next resume

    trained = model
    if world > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)  # e.g. the energy head when only H, S are fitted

    start = time.perf_counter()
    bar = tqdm(total=opt.max_epochs, initial=state["epoch"], disable=not progress or rank != 0,
               desc="train", unit="epoch")
    stop_reason = "max_epochs"
    while state["epoch"] < opt.max_epochs:
        epoch_start = time.perf_counter()
        order = torch.randperm(len(train_data), generator=generator)
        trained.train()
        sums, batches = {}, 0
        for first in range(0, len(order), opt.batch_size):
            chunk = order[first : first + opt.batch_size]
            chunk = chunk[rank::world].to(device)  # each rank its share of the batch
            if len(chunk) == 0:
                continue
            loss, terms = compute_loss(trained, train_data.subset(chunk), config.loss, scales)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, opt.grad_clip)
            optimizer.step()
            ema.update_parameters(model)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            batches += 1
        validation = evaluate_loss(ema.module, valid_data, config.loss, scales, opt.batch_size)
        scheduler.step(validation)
        state["epoch"] += 1
        state["train_time_s"] += time.perf_counter() - epoch_start
        record = {"epoch": state["epoch"], "validation_loss": validation,
                  "learning_rate": optimizer.param_groups[0]["lr"],
                  **{f"train_{k}": v / max(batches, 1) for k, v in sums.items()}}
        state["history"].append(record)
        improved = validation < state["best_loss"]
        if improved:
            state.update(best_loss=validation, best_epoch=state["epoch"], stale_epochs=0)
        else:
            state["stale_epochs"] += 1
        if rank == 0:
            if improved:
                save_model(ema.module, os.path.join(config.output_dir, BEST_MODEL),
                           extra=_training_metadata(config, dataset, state, split,
                                                    shortest_distance, extra_splits))
            _save_checkpoint(checkpoint_path, config, model, ema, optimizer, scheduler,
                             generator, state)
            logger.info("epoch %d: %s", state["epoch"], json.dumps(record))
            bar.set_postfix(val=f"{validation:.3g}", lr=f"{record['learning_rate']:.1e}")
            bar.update(1)
        if state["stale_epochs"] >= opt.early_stopping_patience:
            stop_reason = "early stopping"
            break
        if opt.max_time_minutes and time.perf_counter() - start > 60 * opt.max_time_minutes:
            stop_reason = "time budget"
            break
    bar.close()
    if rank == 0:
        logger.info("stopped (%s) after %d epochs; best validation loss %.4g at epoch %d",
                    stop_reason, state["epoch"], state["best_loss"], state["best_epoch"])
        plot_learning_curve(state["history"], os.path.join(config.output_dir,
                                                           "learning_curve.png"))
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(os.path.join(config.output_dir, BEST_MODEL), state["best_loss"],
                       state["epoch"], state["train_time_s"], state["history"])


def evaluate_loss(model, data: MatrixData, weights, scales, batch_size: int) -> float:
    """Mean loss over ``data`` (gradients only where force terms need them)."""
    model.eval()
    total, count = 0.0, 0
    with torch.set_grad_enabled(weights.forces > 0):
        for first in range(0, len(data), batch_size):
            index = torch.arange(first, min(first + batch_size, len(data)),
                                 device=data.positions_bohr.device)
            loss, _ = compute_loss(model, data.subset(index), weights, scales)
            total += float(loss.detach()) * len(index)
            count += len(index)
    return total / count


def _build_model(config: TrainConfig, dataset: HamiltonianDataset, dtype) -> PhiSNetModel:
    if config.init_from:
        model = load_model(config.init_from)
        logger.info("initialized from %s", config.init_from)
        changes = dict(config.model)
        if changes.get("exact_overlap") and not model.config.exact_overlap:
            # S from the integrals from now on: the overlap head goes
            changes.setdefault("matrices", [m for m in model.config.matrices if m != "overlap"])
        if "matrices" in changes:
            changes["matrices"] = tuple(changes["matrices"])
        if changes:  # raises for anything that would need weights the model does not have
            model = reconfigured(model, **changes)
            logger.info("model settings changed: %s", changes)
        return model.to(dtype)
    from ase.data import chemical_symbols

    theory = dataset.metadata.theory
    numbers = sorted(set(dataset[0].atomic_numbers.tolist()))
    values = {"basis": theory.basis, "elements": [chemical_symbols[z] for z in numbers],
              **config.model}
    if values["basis"] != theory.basis:
        raise ValueError(f"model basis {values['basis']!r} differs from the dataset's "
                         f"{theory.basis!r}")
    return PhiSNetModel(ModelConfig.from_dict(values)).to(dtype)


def min_distance_bohr(positions_bohr: torch.Tensor) -> float:
    """Shortest interatomic distance over a set of geometries ``(N, A, 3)``, Bohr."""
    n = positions_bohr.shape[1]
    if n < 2:
        return float("inf")
    i, j = torch.triu_indices(n, n, offset=1)
    return float((positions_bohr[:, i] - positions_bohr[:, j]).norm(dim=-1).min())


def _training_metadata(config: TrainConfig, dataset, state: dict, split,
                       min_distance: float, extra_splits=()) -> dict:
    return {"training": {
        "min_distance_bohr": min_distance,
        "dataset": os.path.abspath(config.dataset),
        "theory": dataset.metadata.theory.to_dict(),
        "split": _split_record(config.split, dataset, split),
        "extra_data": [{"dataset": os.path.abspath(extra.dataset),
                        "split": _split_record(extra.split, extra_dataset, extra_split)}
                       for extra, extra_dataset, extra_split in extra_splits],
        "epoch": state["epoch"], "validation_loss": state["best_loss"],
        "train_time_s": round(state["train_time_s"], 1),
        "config": config.to_dict(),
    }}


def _split(dataset: HamiltonianDataset, sizes) -> DatasetSplit:
    """``dataset``'s split by a :class:`~ase_phisnet.training.config.SplitConfig`."""
    return dataset.split(sizes.seed, sizes.n_train, sizes.n_validation, sizes.n_test,
                         over_plan=sizes.over_plan)


def _matching_dataset(path, main: HamiltonianDataset) -> HamiltonianDataset:
    """Open an ``extra_data`` file; it must be at the main file's theory (that it holds the
    same molecule, :func:`concatenate` checks)."""
    dataset = HamiltonianDataset(path)
    if dataset.metadata.theory != main.metadata.theory:
        raise ValueError(f"{path}: theory {dataset.metadata.theory} differs from "
                         f"{main.path}'s {main.metadata.theory}")
    return dataset


def _split_record(sizes, dataset, split) -> dict:
    """What reproduces ``split`` from the data file (``HamiltonianDataset.split``'s arguments)."""
    if not sizes.over_plan:
        return {"seed": sizes.seed, "n_train": len(split.train),
                "n_validation": len(split.validation), "n_test": len(split.test)}
    n_test = sizes.n_test if sizes.n_test is not None else (
        dataset.metadata.n_planned - sizes.n_train - sizes.n_validation)
    return {"seed": sizes.seed, "n_train": sizes.n_train, "n_validation": sizes.n_validation,
            "n_test": n_test, "over_plan": True}


def _save_checkpoint(path, config, model, ema, optimizer, scheduler, generator, state):
    temporary = path + ".tmp"
    torch.save({"config": config.to_dict(), "model": model.state_dict(),
                "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                "state": state}, temporary)
    os.replace(temporary, path)


def _attach_log_file(path):
    root = logging.getLogger("ase_phisnet")
    if not any(getattr(h, "baseFilename", None) == os.path.abspath(path) for h in root.handlers):
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def plot_learning_curve(history: list, path: str) -> None:
    """Training terms and validation loss per epoch, log scale, saved as PNG."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.semilogy(epochs, [h["validation_loss"] for h in history], "k-", label="validation (EMA)")
    for key in sorted(k for k in history[0] if k.startswith("train_")):
        axis.semilogy(epochs, [h[key] for h in history], label=key.replace("_", " "), alpha=0.7)
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss (dimensionless)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
