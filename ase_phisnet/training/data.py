"""Training data in memory: reference matrices, energies and forces of one molecule as tensors.

Atomic units (Eh, Bohr, e·Bohr); matrices in PySCF's AO order. Also how a data file is split
(:func:`split_of`, :func:`split_record`) and the domain of the geometries a model trains on
(:func:`domain_of_split`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from ase.units import Bohr

from ase_phisnet.core.domain import TrainingDomain
from ase_phisnet.core.integrals import position_integrals
from ase_phisnet.data.dataset import DatasetSplit, HamiltonianDataset


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
    # name -> (N, nao, nao): a model's matrices from the integrals at these geometries
    # (PhiSNetModel.exact_matrices), computed once (with_exact_matrices) instead of every step
    exact_matrices: dict[str, torch.Tensor] | None = None

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


@torch.no_grad()
def with_exact_matrices(data: MatrixData, model, batch_size: int = 64) -> MatrixData:
    """``data`` with ``exact_matrices`` of ``model`` (float64) at its geometries, so training
    steps without position derivatives skip the integrals."""
    if not model.config.exact_matrix_names:
        return data
    positions = data.positions_bohr.to(torch.float64)
    parts = [model.exact_matrices(data.atomic_numbers, positions[first:first + batch_size],
                                  twice_differentiable=False)
             for first in range(0, len(data), batch_size)]
    exact = {name: torch.cat([part[name] for part in parts]).to(data.positions_bohr.dtype)
             for name in parts[0]}
    return replace(data, exact_matrices=exact)


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


def split_of(dataset: HamiltonianDataset, sizes) -> DatasetSplit:
    """``dataset``'s split by a :class:`~ase_phisnet.training.config.SplitConfig`."""
    return dataset.split(sizes.seed, sizes.n_train, sizes.n_validation, sizes.n_test,
                         over_plan=sizes.over_plan)


def matching_dataset(path, main: HamiltonianDataset) -> HamiltonianDataset:
    """Open an ``extra_data`` file; it must be at the main file's theory (that it holds the
    same molecule, :func:`concatenate` checks)."""
    dataset = HamiltonianDataset(path)
    if dataset.metadata.theory != main.metadata.theory:
        raise ValueError(f"{path}: theory {dataset.metadata.theory} differs from "
                         f"{main.path}'s {main.metadata.theory}")
    return dataset


def split_record(sizes, dataset, split) -> dict:
    """What reproduces ``split`` from the data file (``HamiltonianDataset.split``'s arguments)."""
    if not sizes.over_plan:
        return {"seed": sizes.seed, "n_train": len(split.train),
                "n_validation": len(split.validation), "n_test": len(split.test)}
    n_test = sizes.n_test if sizes.n_test is not None else (
        dataset.metadata.n_planned - sizes.n_train - sizes.n_validation)
    return {"seed": sizes.seed, "n_train": sizes.n_train, "n_validation": sizes.n_validation,
            "n_test": n_test, "over_plan": True}


def recorded_split(dataset: HamiltonianDataset, record: dict) -> DatasetSplit:
    """``dataset``'s split as :func:`split_record` recorded it (a model file's ``training``
    ``split`` or an ``extra_data`` entry's)."""
    return dataset.split(record["seed"], record["n_train"], record["n_validation"],
                         record["n_test"], over_plan=record.get("over_plan", False))


def planned_train_rows(dataset: HamiltonianDataset, record: dict) -> np.ndarray:
    """Plan rows of the training part of the split described by ``record`` (a
    :func:`split_record`): for an ``over_plan`` split the planned rows, whether or not their
    reference is computed yet; otherwise the rows of the training records present."""
    if record.get("over_plan"):
        order = np.random.default_rng(record["seed"]).permutation(dataset.metadata.n_planned)
        return np.sort(order[: record["n_train"]])
    split = dataset.split(record["seed"], record["n_train"], record["n_validation"],
                          record["n_test"])
    return dataset.indices[split.train]


def domain_of_split(dataset: HamiltonianDataset, record: dict) -> TrainingDomain:
    """The :class:`~ase_phisnet.core.domain.TrainingDomain` of the training geometries of
    ``dataset`` under the split ``record`` (read from the file's plan)."""
    numbers, planned_bohr = dataset.plan()
    rows = planned_train_rows(dataset, record)
    return TrainingDomain.from_geometries(numbers, planned_bohr[rows] * Bohr)


def training_domain_of_record(training: dict, data_dir: str | None = None) -> TrainingDomain:
    """The domain of a model's training geometries from its training record (the
    ``"training"`` entry of its JSON: main and extra data files with their splits). Data files
    are looked up by their recorded path, or by name in ``data_dir`` when given."""
    def opened(path):
        return HamiltonianDataset(os.path.join(data_dir, os.path.basename(path))
                                  if data_dir else path)

    parts = [(training["dataset"], training["split"])]
    parts += [(extra["dataset"], extra["split"]) for extra in training.get("extra_data", [])]
    domains = []
    for path, record in parts:
        dataset = opened(path)
        domains.append(domain_of_split(dataset, record))
        dataset.close()
    return TrainingDomain.union(domains)
