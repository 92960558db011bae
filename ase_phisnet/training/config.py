"""Typed, validated training configuration, read from YAML.

Example (``configs/water_example.yaml`` in the repository documents every key)::

    dataset: water.h5
    output_dir: runs/water
    split: {n_train: 800, n_validation: 100, n_test: 100, seed: 0}
    extra_data: [{dataset: water_hot.h5, split: {n_train: 300, n_validation: 50}}]  # optional
    model: {channels: [32, 16, 16, 8, 8], num_layers: 3, tracegrad: false}
    optim: {optimizer: adamw, learning_rate: 2.0e-3, batch_size: 16, max_epochs: 300}
    loss: {hamiltonian: 1.0, orbital_energies: 0.0}
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from ase_phisnet.core._dataclasses import from_dict_checked

OPTIMIZERS = ("adamw", "amsgrad")
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class SplitConfig:
    """Sizes of the train/validation/test splits and the seed that draws them.

    ``over_plan``: draw over the planned record indices of the data set, so training can
    start on a file that is still being generated (see ``HamiltonianDataset.split``).
    """

    n_train: int = 800
    n_validation: int = 100
    n_test: int | None = None  # None: every remaining record
    seed: int = 0
    over_plan: bool = False


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer, schedule and stopping.

    ``lr_decay_factor``/``lr_patience``: ReduceLROnPlateau on the validation loss.
    ``early_stopping_patience``: epochs without validation improvement before stopping.
    ``max_time_minutes``: wall-clock budget of this run (a resumed run gets a fresh budget).
    ``select_on``: the validation records whose loss chooses the saved epoch and drives the
    schedule and early stopping: ``"all"`` (every file's validation part) or ``"main"`` (the
    main dataset's only, so that far-from-equilibrium ``extra_data`` train but do not choose).
    ``feature_noise``: energy stage with electronic features only. Gaussian noise added to every
    training batch's features, with a standard deviation of this many training spreads of
    each feature (per element; 0: none). The features come from predicted matrices whose
    errors move them by 0.1-0.8 training spreads (ethanol, benchmarks/one_potential.py), on
    training and new geometries alike. The noise asks the remainder to weigh a feature by how
    reliable it is, not to read it exactly.
    ``cache_workers``: energy stage only. The number of processes, one thread each, that
    compute the cached electronic terms before training.
    """

    optimizer: Literal["adamw", "amsgrad"] = "adamw"
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    max_epochs: int = 300
    lr_decay_factor: float = 0.5
    lr_patience: int = 10
    min_learning_rate: float = 1e-6
    ema_decay: float = 0.99
    grad_clip: float = 10.0
    early_stopping_patience: int = 40
    max_time_minutes: float | None = None
    dtype: Literal["float32", "float64"] = "float32"
    device: str = "auto"
    select_on: Literal["all", "main"] = "all"
    feature_noise: float = 0.0
    cache_workers: int = 1

    def __post_init__(self):
        if isinstance(self.cache_workers, bool) or not isinstance(self.cache_workers, int) \
                or self.cache_workers < 1:
            raise ValueError(f"cache_workers must be a whole number >= 1, got "
                             f"{self.cache_workers!r}")
        if not (self.feature_noise >= 0 and math.isfinite(self.feature_noise)):
            raise ValueError(f"feature_noise must be a finite number >= 0, got "
                             f"{self.feature_noise!r}")
        if self.select_on not in ("all", "main"):
            raise ValueError(f"select_on must be 'all' or 'main', got {self.select_on!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.learning_rate <= 0 or self.batch_size < 1 or self.max_epochs < 0:
            raise ValueError("learning_rate and batch_size must be positive, max_epochs >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 < self.lr_decay_factor < 1.0:
            raise ValueError(f"lr_decay_factor must be in (0, 1), got {self.lr_decay_factor}")
        # clip_grad_norm_ with 0 zeroes every gradient and with a negative norm flips them
        if not (self.grad_clip > 0 and math.isfinite(self.grad_clip)):
            raise ValueError(f"grad_clip (the largest gradient norm) must be a finite number "
                             f"> 0, got {self.grad_clip!r}")
        for name in ("lr_patience", "early_stopping_patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of epochs >= 1, got {value!r}")
        if not 0.0 <= self.min_learning_rate < self.learning_rate:
            raise ValueError(f"min_learning_rate must be in [0, learning_rate), got "
                             f"{self.min_learning_rate!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.max_time_minutes is not None and not self.max_time_minutes > 0:
            raise ValueError(f"max_time_minutes must be > 0 (or null: no budget), got "
                             f"{self.max_time_minutes!r}")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (each term is dimensionless, see :mod:`ase_phisnet.training.loss`).

    ``virtual_orbitals``: how many of the lowest virtual orbital energies join the occupied ones
    in the orbital-energy term. With none, nothing holds the predicted LUMO where the reference
    has it, and end-to-end training can let it sink into the occupied levels outside the data.

    ``overlap`` and ``core_hamiltonian`` weigh predicted S and H_core; a model that takes
    them from the integrals (the default) has no such term, and ``tracegrad`` only counts for
    a model with the TraceGrad branch.

    ``huber_delta``: when > 0, the squared part of the energy and force terms becomes
    ``2 huber(x, delta)`` of the scaled error ``x = (pred - ref) / sigma``: ``x^2`` for
    ``|x| <= delta``, ``2 delta |x| - delta^2`` beyond. Geometries far from the thermal data
    (bond scans, rattled structures), whose errors can be a hundred sigma early in training,
    then pull with a bounded gradient instead of drowning the thermal ones. ``0``: plain
    squared error.
    """

    hamiltonian: float = 1.0
    overlap: float = 1.0
    core_hamiltonian: float = 1.0
    orbital_energies: float = 0.0
    tracegrad: float = 0.1
    energy: float = 0.0
    forces: float = 0.0
    dipole: float = 0.0  # dipole moment of the predicted density matrix (needs H and S)
    virtual_orbitals: int = 0
    huber_delta: float = 0.0

    def __post_init__(self):
        if any(w < 0 for w in dataclasses.astuple(self)):
            raise ValueError(f"loss weights must be >= 0, got {self}")
        if int(self.virtual_orbitals) != self.virtual_orbitals:
            raise ValueError(
                f"virtual_orbitals must be a whole number, got {self.virtual_orbitals}")


@dataclass(frozen=True)
class ExtraData:
    """A further data file of the same molecule and theory, e.g. hotter geometries that reach
    the bond lengths MD visits. Its own split's training and validation parts join the main
    file's; its test part is left for ``ase-phisnet evaluate``.

    ``repeat``: how many times its training part enters each epoch (oversampling, e.g. for a
    few dozen labeled MD failure frames beside a thousand thermal geometries)."""

    dataset: str
    split: SplitConfig = field(default_factory=SplitConfig)
    repeat: int = 1

    def __post_init__(self):
        if int(self.repeat) != self.repeat or self.repeat < 1:
            raise ValueError(f"extra_data.repeat must be a whole number >= 1, got {self.repeat}")

    @classmethod
    def from_dict(cls, values) -> ExtraData:
        if not isinstance(values, dict) or "dataset" not in values:
            raise ValueError(f"each extra_data entry needs 'dataset' (and a 'split'), got "
                             f"{values!r}")
        values = dict(values)
        values["split"] = from_dict_checked(SplitConfig, values.get("split"), "extra_data.split")
        return from_dict_checked(cls, values, "extra_data")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``ase-phisnet train`` needs."""

    dataset: str
    output_dir: str
    seed: int = 0
    split: SplitConfig = field(default_factory=SplitConfig)
    extra_data: tuple[ExtraData, ...] = ()
    model: dict = field(default_factory=dict)  # ModelConfig fields; basis/elements from data
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    init_from: str | None = None  # a model file to start from (fine-tuning)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        values = dict(values)
        for key in ("dataset", "output_dir"):
            if key not in values:
                raise ValueError(f"training config needs '{key}'")
        nested = {"split": SplitConfig, "optim": OptimConfig, "loss": LossWeights}
        for key, kind in nested.items():
            values[key] = from_dict_checked(kind, values.get(key), key)
        extra = values.get("extra_data") or ()
        if not isinstance(extra, (list, tuple)):
            raise ValueError(f"extra_data must be a list of {{dataset, split}}, got {extra!r}")
        values["extra_data"] = tuple(ExtraData.from_dict(entry) for entry in extra)
        return from_dict_checked(cls, values, "top level")

    @classmethod
    def from_yaml(cls, path) -> TrainConfig:
        import yaml

        with open(path) as handle:
            values = yaml.safe_load(handle)
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a training config must be a YAML mapping")
        return cls.from_dict(values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
