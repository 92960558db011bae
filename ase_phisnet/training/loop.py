"""Training of PhiSNet on a reference dataset.

The loss is :mod:`ase_phisnet.training.loss`, the data in memory
:mod:`ase_phisnet.training.data`.

AdamW or AMSGrad, ReduceLROnPlateau on the validation loss, an exponential moving average (EMA)
of the weights (validated and saved), gradient clipping, early stopping, and a checkpoint after
every epoch that resumes exactly (weights, EMA, optimizer, scheduler, RNG, history). Runs on CUDA
when present and under ``torchrun`` with DistributedDataParallel.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass

import torch
from ase.units import Bohr

from ase_phisnet.core.domain import TrainingDomain
from ase_phisnet.core.errors import ElectronCountError, PhiSNetError
from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.electronic.energy import energy_from_outputs
from ase_phisnet.electronic.model import ModelConfig, PhiSNetModel, reconfigured
from ase_phisnet.electronic.model_file import load_model, recorded_config, save_model
from ase_phisnet.electronic.remainder import element_energy_offsets_eh
from ase_phisnet.training.config import TrainConfig
from ase_phisnet.training.data import (
    MatrixData,
    concatenate,
    load_matrix_data,
    matching_dataset,
    split_of,
    split_record,
    with_exact_matrices,
)
from ase_phisnet.training.loss import compute_loss, evaluate_loss, loss_scales

logger = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
BEST_MODEL = "best_model.pt"


@torch.no_grad()
def fit_onsite_offsets(model: PhiSNetModel, train: MatrixData) -> None:
    """Set the predicted heads' on-site offsets to the training mean of the diagonal blocks
    of what each head predicts (for H over a baseline, of ``H - H_base``; ``train`` then
    holds the model's exact matrices, :func:`~ase_phisnet.training.data.with_exact_matrices`)."""
    numbers = train.atomic_numbers.tolist()
    slices = model.layout.ao_slices(numbers)
    for name, matrices in train.matrices.items():
        if name == "overlap":  # its on-site blocks are exact constants
            continue
        if name == "hamiltonian" and model.config.baseline != "none":
            matrices = matrices - train.exact_matrices["baseline_hamiltonian"].to(matrices.dtype)
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
        out = model(batch.atomic_numbers, batch.positions_bohr, exact=batch.exact_matrices)
        try:
            predicted = energy_from_outputs(out, batch.atomic_numbers, batch.positions_bohr,
                                            n_occ, energy_model=model.config.energy_model)
        except ElectronCountError:  # the data's charge, not the matrices
            raise
        except PhiSNetError as error:
            raise ValueError(
                f"energy/force training needs sensible predicted matrices ({error}); train the "
                "matrices first (loss.energy = loss.forces = 0), then fine-tune that model "
                "with init_from") from None
        residuals.append(batch.energy_eh - predicted.energy_eh)
    residual = torch.cat(residuals).double().cpu().numpy()
    model.remainder.element_energy_eh.copy_(torch.as_tensor(element_energy_offsets_eh(
        model.species(train.atomic_numbers).cpu().numpy(), len(model.atomic_numbers), residual)))


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
    stop_reason: str = "max_epochs"  # "max_epochs", "early stopping" or "time budget"


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train (or resume training) as ``config`` says; returns where the best model is.

    A config whose ``model.remainder`` is ``message_passing`` trains that remainder on energies
    and forces with the matrices of ``init_from`` frozen
    (:func:`~ase_phisnet.training.energy_stage.train_energy`). The run's INFO records go to
    ``output_dir/train.log``, and torch's random state is seeded with ``config.seed``; both
    only for the duration of the call (:func:`training_session`)."""
    energy_stage = config.model.get("remainder") == "message_passing"
    if energy_stage and config.optim.device not in ("auto", "cpu"):
        raise ValueError(f"optim.device {config.optim.device!r}: the energy stage trains on the "
                         "CPU (its cached electronic terms make each step small); use 'auto' "
                         "or 'cpu'")
    if energy_stage:  # one process on the CPU; no process group
        rank, device = int(os.environ.get("RANK", "0")), torch.device("cpu")
    else:
        (rank, _), device = _distributed(), training_device(config.optim.device)
    os.makedirs(config.output_dir, exist_ok=True)
    log_path = os.path.join(config.output_dir, "train.log") if rank == 0 else None
    with training_session(log_path, config.seed, device):
        if energy_stage:
            from ase_phisnet.training.energy_stage import train_energy

            return train_energy(config, progress)
        return _train_matrices(config, progress, device)


def training_device(name: str) -> torch.device:
    """The device of ``optim.device`` for this process: under torchrun with CUDA, the GPU of
    its ``LOCAL_RANK``."""
    device = resolve_device(name)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


@contextlib.contextmanager
def training_session(log_path: str | None, seed: int,
                     device: torch.device = torch.device("cpu")):
    """Scope of one training run: the package logger writes INFO records to ``log_path`` (when
    given) and torch's global random state (the CPU's, and ``device``'s when it is a GPU) is
    seeded with ``seed``. The caller's handlers (the console) still get only the records at or
    above the level the caller had set: the INFO records for the file are not propagated to
    them. On exit the handlers go, the logger's level, propagation and torch's random state
    are restored, so a caller's logging and random streams are as they were."""
    package_logger = logging.getLogger("ase_phisnet")
    level, propagate = package_logger.level, package_logger.propagate
    added = []
    if log_path is not None:
        handler = logging.FileHandler(log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        added.append(handler)
        callers_level = package_logger.getEffectiveLevel()
        if callers_level > logging.INFO:
            package_logger.setLevel(logging.INFO)
            if propagate and package_logger.parent is not None:
                package_logger.propagate = False
                added.append(_Forward(package_logger, callers_level))
        for handler in added:
            package_logger.addHandler(handler)
    try:
        gpus = [] if device.type != "cuda" else [
            device.index if device.index is not None else torch.cuda.current_device()]
        with torch.random.fork_rng(devices=gpus):
            torch.manual_seed(seed)
            yield
    finally:
        package_logger.setLevel(level)
        package_logger.propagate = propagate
        for handler in added:
            package_logger.removeHandler(handler)
            handler.close()


class _Forward(logging.Handler):
    """Hands on to the package logger's parent (and up) the records that propagation would
    have delivered with the caller's settings: at or above the level of the logger they come
    from, or of its nearest ancestor below the package logger with a level set, else at or
    above ``callers_level``, the package logger's effective level before the session."""

    def __init__(self, package_logger: logging.Logger, callers_level: int):
        super().__init__()
        self.package_logger, self.callers_level = package_logger, callers_level

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        while logger is not self.package_logger and logger.level == logging.NOTSET:
            logger = logger.parent
        threshold = self.callers_level if logger is self.package_logger else logger.level
        if record.levelno >= threshold:
            self.package_logger.parent.callHandlers(record)


def _train_matrices(config: TrainConfig, progress: bool, device: torch.device) -> TrainResult:
    """The matrix (and end-to-end) training of :func:`train`, inside its session, on
    ``device`` (:func:`training_device`)."""
    from tqdm.auto import tqdm

    rank, world = _distributed()
    opt = config.optim
    if opt.feature_noise:
        raise ValueError("optim.feature_noise is implemented for the energy stage only "
                         "(model.remainder: message_passing with electronic features)")
    if opt.cache_workers != 1:
        raise ValueError("optim.cache_workers is used by the energy stage only (it computes "
                         "the cached electronic terms); matrix training has none")
    dtype = getattr(torch, opt.dtype)

    dataset = HamiltonianDataset(config.dataset)
    split = split_of(dataset, config.split)
    model = _build_model(config, dataset, dtype)
    if model.config.remainder == "message_passing" and (config.loss.energy > 0
                                                        or config.loss.forces > 0):
        raise ValueError("the energy of a message-passing remainder trains with the matrices "
                         "frozen: put remainder: message_passing under model in the config")
    _check_orbital_terms(config, model)
    names = list(model.config.matrices)
    dipoles = config.loss.dipole > 0
    n_virtual = config.loss.virtual_orbitals
    train_parts = [load_matrix_data(dataset, split.train, names, dipoles, n_virtual)]
    valid_parts = [load_matrix_data(dataset, split.validation, names, dipoles, n_virtual)]
    dataset.close()  # all in memory now; the generator may still be appending to the file
    extra_splits = []
    for extra in config.extra_data:
        extra_dataset = matching_dataset(extra.dataset, dataset)
        extra_split = split_of(extra_dataset, extra.split)
        train_part = load_matrix_data(extra_dataset, extra_split.train, names, dipoles,
                                      n_virtual)
        train_parts.extend([train_part] * extra.repeat)
        if len(extra_split.validation):  # an extra file may train only (n_validation: 0)
            valid_parts.append(load_matrix_data(extra_dataset, extra_split.validation, names,
                                                dipoles, n_virtual))
        extra_splits.append((extra, extra_dataset, extra_split))
        extra_dataset.close()
    # The integrals (S, H_core, the baseline) depend on the geometry alone: once per geometry
    train_data = with_exact_matrices(concatenate(train_parts), model)
    # select_on: main validates on the main file's records alone; the extra files train only
    chosen_valid = valid_parts if opt.select_on == "all" else valid_parts[:1]
    valid_data = with_exact_matrices(concatenate(chosen_valid), model)
    logger.info("%d training (repeats counted) and %d validation geometries from %d file(s)",
                len(train_data), len(valid_data), 1 + len(config.extra_data))
    # The main file sets the loss scales: extra files (hot, stretched bonds) would widen the
    # spreads and so weaken every term on the geometries the model is for.
    scales = loss_scales(model, train_parts[0])
    domain = TrainingDomain.from_geometries(train_data.atomic_numbers.numpy(),
                                            train_data.positions_bohr.numpy() * Bohr)
    resuming = os.path.exists(os.path.join(config.output_dir, CHECKPOINT))  # fits come from it
    if not config.init_from and not resuming:
        fit_onsite_offsets(model, train_data)
    wants_energy = config.loss.energy > 0 or config.loss.forces > 0
    if (wants_energy and not resuming
            and not bool(model.remainder.element_energy_eh.detach().any())):
        fit_element_energies(model, train_data.to("cpu", dtype))  # fresh or H-only model
    model.to(device=device, dtype=dtype)
    train_data, valid_data = train_data.to(device, dtype), valid_data.to(device, dtype)

    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler, ema, generator, state = new_optimization(model, parameters, opt,
                                                                   config.seed)
    checkpoint_path = os.path.join(config.output_dir, CHECKPOINT)
    if os.path.exists(checkpoint_path):
        checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=False)
        state = load_checkpoint(checkpoint, model, ema, optimizer, scheduler, generator)
        if checkpoint["config"] != config.to_dict():
            logger.warning("resuming with a changed config; the checkpoint's run continues")
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
    if state["stale_epochs"] >= opt.early_stopping_patience:  # a finished run, resumed
        stop_reason = "early stopping"
    while state["epoch"] < opt.max_epochs and stop_reason != "early stopping":
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
                                                    domain, extra_splits))
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
                       state["epoch"], state["train_time_s"], state["history"], stop_reason)


def new_optimization(model, parameters, opt, seed: int):
    """``(optimizer, scheduler, ema, generator, state)`` of a fresh run: AdamW or AMSGrad over
    ``parameters``, ReduceLROnPlateau, the EMA of ``model``, the batch-order RNG and the
    training state (epoch, best loss, history, time), as ``opt`` (an ``OptimConfig``) says."""
    optimizer = torch.optim.AdamW(parameters, lr=opt.learning_rate,
                                  weight_decay=opt.weight_decay,
                                  amsgrad=opt.optimizer == "amsgrad")
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=opt.lr_decay_factor, patience=opt.lr_patience,
        min_lr=opt.min_learning_rate)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(opt.ema_decay),
        use_buffers=True)
    generator = torch.Generator().manual_seed(seed)
    state = {"epoch": 0, "best_loss": math.inf, "best_epoch": -1, "stale_epochs": 0,
             "history": [], "train_time_s": 0.0}
    return optimizer, scheduler, ema, generator, state


def load_checkpoint(checkpoint: dict, model, ema, optimizer, scheduler, generator) -> dict:
    """Restore what :func:`_save_checkpoint` wrote into the objects of
    :func:`new_optimization`; returns the training state.

    Raises :class:`PhiSNetError` when the checkpoint was written for a model with other
    settings (weights of the same shapes can belong to a different function, e.g. another
    ``remainder_norm_eps``); a checkpoint without recorded settings resumes with a warning."""
    recorded = checkpoint.get("model_config")
    if recorded is not None:  # settings added since take their values of that time
        try:
            recorded = recorded_config(recorded).to_dict()
        except (TypeError, ValueError) as error:
            raise PhiSNetError(
                f"the checkpoint's model settings are not valid now: {error}") from error
    current = model.config.to_dict()
    if recorded is None:
        logger.warning("the checkpoint does not record its model settings; resuming with %s",
                       current)
    elif recorded != current:
        changed = sorted(k for k in set(recorded) | set(current)
                         if recorded.get(k) != current.get(k))
        raise PhiSNetError(
            "the checkpoint was written for a model with other settings ("
            + ", ".join(f"{k}: {recorded.get(k)!r} there, {current.get(k)!r} now"
                        for k in changed)
            + "); start a new output_dir or restore those settings")
    model.load_state_dict(checkpoint["model"])
    ema.load_state_dict(checkpoint["ema"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    generator.set_state(checkpoint["generator"])
    return checkpoint["state"]


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


def _training_metadata(config: TrainConfig, dataset, state: dict, split,
                       domain: TrainingDomain, extra_splits=()) -> dict:
    return {"domain": domain.to_dict(), "training": {
        "dataset": os.path.abspath(config.dataset),
        "theory": dataset.metadata.theory.to_dict(),
        "split": split_record(config.split, dataset, split),
        "extra_data": [{"dataset": os.path.abspath(extra.dataset),
                        "split": split_record(extra.split, extra_dataset, extra_split)}
                       for extra, extra_dataset, extra_split in extra_splits],
        "epoch": state["epoch"], "validation_loss": state["best_loss"],
        "train_time_s": round(state["train_time_s"], 1),
        "config": config.to_dict(),
    }}


def _save_checkpoint(path, config, model, ema, optimizer, scheduler, generator, state):
    temporary = path + ".tmp"
    torch.save({"config": config.to_dict(), "model_config": model.config.to_dict(),
                "model": model.state_dict(),
                "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                "state": state}, temporary)
    os.replace(temporary, path)


def plot_learning_curve(history: list, path: str) -> None:
    """Training terms and validation loss per epoch, log scale, saved as PNG."""
    if not history:
        return
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    epochs = [h["epoch"] for h in history]
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    axis.semilogy(epochs, [h["validation_loss"] for h in history], "k-", label="validation (EMA)")
    for key in sorted(k for k in history[0] if k.startswith("train_")):
        axis.semilogy(epochs, [h[key] for h in history], label=key.replace("_", " "), alpha=0.7)
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss (dimensionless)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
