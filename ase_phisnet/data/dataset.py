"""Reference datasets: one HDF5 file per dataset, written record by record, read lazily.

File layout (format ``ase-phisnet-dataset``, version 1; all quantities in atomic units)::

    /                      attrs: format, format_version, molecule, theory (JSON), sampler (JSON),
                                  pyscf_version, ase_phisnet_version, created_utc, n_planned
    /plan/atomic_numbers   (N,)       int64
    /plan/positions_bohr   (n, N, 3)  float64   every geometry the run will compute
    /plan/temperature_k    (n,)       float64   sampling temperature of each geometry
    /records/<index>       one group per converged geometry, <index> = its row in /plan (6 digits)
        atomic_numbers (N,), positions_bohr (N, 3), forces_eh_per_bohr (N, 3),
        hamiltonian_eh (nao, nao), overlap (nao, nao), core_hamiltonian_eh (nao, nao),
        orbital_energies_eh (nao,), occupations (nao,), dipole_e_bohr (3,)
        attrs: energy_eh, scf_cycles, wall_time_s
    /failed/<index>        attrs: reason   (a geometry whose SCF did not converge; no data)

A record is written under a temporary name, renamed when complete and the file flushed, so a run
killed at any point keeps every finished record and resumes with the rest of the plan.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass

import numpy as np

from ase_phisnet.core.errors import DatasetFileError
from ase_phisnet.core.version import __version__
from ase_phisnet.data.reference import ReferenceRecord, Theory

FORMAT_NAME = "ase-phisnet-dataset"
FORMAT_VERSION = 1
_PARTIAL = "_partial"


def _record_name(index: int) -> str:
    return f"{index:06d}"


@dataclass(frozen=True)
class DatasetMetadata:
    """What a dataset holds and how it was made."""

    molecule: str
    theory: Theory
    sampler: dict
    n_planned: int
    pyscf_version: str
    ase_phisnet_version: str
    created_utc: str

    def same_recipe(self, other: DatasetMetadata) -> bool:
        """True if ``other`` asks for the same data (versions and dates may differ)."""
        return (self.molecule, self.theory, self.sampler, self.n_planned) == (
            other.molecule,
            other.theory,
            other.sampler,
            other.n_planned,
        )


def new_metadata(molecule: str, theory: Theory, sampler: dict, n_planned: int) -> DatasetMetadata:
    import pyscf

    return DatasetMetadata(
        molecule=molecule,
        theory=theory,
        sampler=json.loads(json.dumps(sampler)),
        n_planned=int(n_planned),
        pyscf_version=pyscf.__version__,
        ase_phisnet_version=__version__,
        created_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def _open_h5(path, mode):
    import h5py

    try:
        return h5py.File(path, mode)
    except OSError as error:
        raise DatasetFileError(f"{path}: not a readable HDF5 file ({error})") from None


def _read_metadata(handle, path) -> DatasetMetadata:
    attrs = handle.attrs
    if attrs.get("format") != FORMAT_NAME:
        raise DatasetFileError(
            f"{path}: not an ase-phisnet dataset (format attribute {attrs.get('format')!r}, "
            f"expected {FORMAT_NAME!r})"
        )
    version = int(attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise DatasetFileError(
            f"{path}: dataset format version {version}; this ase_phisnet reads version "
            f"{FORMAT_VERSION}"
        )
    try:
        return DatasetMetadata(
            molecule=str(attrs["molecule"]),
            theory=Theory.from_dict(json.loads(attrs["theory"])),
            sampler=json.loads(attrs["sampler"]),
            n_planned=int(attrs["n_planned"]),
            pyscf_version=str(attrs["pyscf_version"]),
            ase_phisnet_version=str(attrs["ase_phisnet_version"]),
            created_utc=str(attrs["created_utc"]),
        )
    except (KeyError, ValueError, TypeError) as error:
        raise DatasetFileError(f"{path}: damaged dataset metadata ({error})") from None


class DatasetWriter:
    """Appends records to a dataset file; creates it or resumes it.

    Use as a context manager::

        with DatasetWriter.create_or_resume(path, metadata, plan) as writer:
            for index in writer.pending_indices():
                writer.write_record(index, compute_reference(...))
    """

    def __init__(self, handle, path):
        self._handle = handle
        self.path = path

    @classmethod
    def create_or_resume(
        cls,
        path,
        metadata: DatasetMetadata,
        atomic_numbers: np.ndarray,
        positions_bohr: np.ndarray,
        temperatures_k: np.ndarray,
    ) -> DatasetWriter:
        """Create ``path`` with this plan, or reopen it if it already holds the same recipe."""
        if os.path.exists(path):
            writer = cls.resume(path)
            existing = writer.metadata
            if not existing.same_recipe(metadata):
                writer.close()
                raise DatasetFileError(
                    f"{path} already holds a different dataset (molecule {existing.molecule!r}, "
                    f"theory {existing.theory}, sampler {existing.sampler}, "
                    f"n={existing.n_planned}); choose another output file or the same settings"
                )
            return writer
        handle = _open_h5(path, "w-")
        attrs = handle.attrs
        attrs["format"] = FORMAT_NAME
        attrs["format_version"] = FORMAT_VERSION
        attrs["molecule"] = metadata.molecule
        attrs["theory"] = json.dumps(metadata.theory.to_dict())
        attrs["sampler"] = json.dumps(metadata.sampler)
        attrs["n_planned"] = metadata.n_planned
        attrs["pyscf_version"] = metadata.pyscf_version
        attrs["ase_phisnet_version"] = metadata.ase_phisnet_version
        attrs["created_utc"] = metadata.created_utc
        plan = handle.create_group("plan")
        plan["atomic_numbers"] = np.asarray(atomic_numbers, dtype=np.int64)
        plan["positions_bohr"] = np.asarray(positions_bohr, dtype=np.float64)
        plan["temperature_k"] = np.asarray(temperatures_k, dtype=np.float64)
        handle.create_group("records")
        handle.create_group("failed")
        handle.flush()
        return cls(handle, path)

    @classmethod
    def resume(cls, path) -> DatasetWriter:
        """Reopen an existing dataset for appending; drops a record left half-written."""
        handle = _open_h5(path, "r+")
        _read_metadata(handle, path)
        if _PARTIAL in handle["records"]:
            del handle["records"][_PARTIAL]
            handle.flush()
        return cls(handle, path)

    @property
    def metadata(self) -> DatasetMetadata:
        return _read_metadata(self._handle, self.path)

    def plan(self) -> tuple[np.ndarray, np.ndarray]:
        """``(atomic_numbers (N,), positions_bohr (n, N, 3))`` of the whole run."""
        plan = self._handle["plan"]
        return plan["atomic_numbers"][()], plan["positions_bohr"][()]

    def done_indices(self) -> set[int]:
        return {int(name) for name in self._handle["records"]}

    def failed_indices(self) -> set[int]:
        return {int(name) for name in self._handle["failed"]}

    def pending_indices(self) -> list[int]:
        """Plan rows with neither a record nor a recorded failure, ascending."""
        finished = self.done_indices() | self.failed_indices()
        return [i for i in range(self.metadata.n_planned) if i not in finished]

    def write_record(self, index: int, record: ReferenceRecord) -> None:
        """Store ``record`` as plan row ``index`` and flush the file."""
        records = self._handle["records"]
        name = _record_name(index)
        if name in records:
            raise DatasetFileError(f"{self.path}: record {index} already exists")
        group = records.create_group(_PARTIAL)
        for field in ReferenceRecord.ARRAY_FIELDS:
            group.create_dataset(field, data=getattr(record, field))
        for field in ReferenceRecord.SCALAR_FIELDS:
            group.attrs[field] = getattr(record, field)
        records.move(_PARTIAL, name)
        self._handle.flush()

    def write_failure(self, index: int, reason: str) -> None:
        """Mark plan row ``index`` as failed (no data is stored) and flush."""
        group = self._handle["failed"].require_group(_record_name(index))
        group.attrs["reason"] = reason
        self._handle.flush()

    def close(self) -> None:
        if self._handle:
            self._handle.close()
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


@dataclass(frozen=True)
class DatasetSplit:
    """Positions (into a :class:`HamiltonianDataset`) of the train/validation/test records."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


class HamiltonianDataset:
    """Read-only, lazy view of a dataset file; each item is a :class:`ReferenceRecord`.

    The file is opened on first access in each process, so the object can be handed to
    ``torch.utils.data.DataLoader`` workers. Items are ordered by their plan index, so an
    interrupted-and-resumed file orders (and splits) exactly like an uninterrupted one.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise DatasetFileError(f"{self.path}: no such dataset file")
        with _open_h5(self.path, "r") as handle:
            self.metadata = _read_metadata(handle, self.path)
            self.indices = np.array(sorted(int(name) for name in handle["records"]
                                           if name != _PARTIAL), dtype=np.int64)
            self.failed = {int(name): str(group.attrs["reason"])
                           for name, group in handle["failed"].items()}
        self._handle = None
        self._handle_pid = None

    def __len__(self) -> int:
        return len(self.indices)

    def _file(self):
        if self._handle is None or self._handle_pid != os.getpid():
            self._handle = _open_h5(self.path, "r")
            self._handle_pid = os.getpid()
        return self._handle

    def __getitem__(self, position: int) -> ReferenceRecord:
        if not -len(self) <= position < len(self):
            raise IndexError(f"record {position} out of range for {len(self)} records")
        group = self._file()["records"][_record_name(int(self.indices[position]))]
        values = {field: group[field][()] for field in ReferenceRecord.ARRAY_FIELDS}
        values.update({field: group.attrs[field].item() for field in ReferenceRecord.SCALAR_FIELDS})
        return ReferenceRecord(**values)

    def positions_bohr(self) -> np.ndarray:
        """Positions (Bohr) of every record, shape ``(len(self), N, 3)``, from the file's plan
        (no reference arrays read)."""
        return self._file()["plan"]["positions_bohr"][()][self.indices]

    def plan(self) -> tuple[np.ndarray, np.ndarray]:
        """``(atomic_numbers (N,), positions_bohr (n_planned, N, 3))``: every planned geometry,
        computed or not."""
        plan = self._file()["plan"]
        return plan["atomic_numbers"][()], plan["positions_bohr"][()]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handle"] = None
        state["_handle_pid"] = None
        return state

    def split(
        self, seed: int, n_train: int, n_validation: int, n_test: int | None = None,
        over_plan: bool = False,
    ) -> DatasetSplit:
        """Disjoint random train/validation/test positions, reproducible by ``seed``.

        ``n_test=None`` puts every remaining record in the test split.

        ``over_plan=True`` draws the split over the *planned* record indices
        (``metadata.n_planned``) and keeps those present in the file. A split taken while
        generation is still running is then a subset of the split of the finished file, so
        a model can start training on partial data without any finished-file test record
        in its training set. On a finished file without failures both kinds of split are
        identical; with missing records each part holds fewer than the sizes asked for.
        """
        n_total = self.metadata.n_planned if over_plan else len(self)
        n_rest = n_total - n_train - n_validation
        n_test = n_rest if n_test is None else n_test
        if min(n_train, n_validation, n_test) < 0 or n_train + n_validation + n_test > n_total:
            raise ValueError(
                f"cannot split {n_total} {'planned ' if over_plan else ''}records into "
                f"{n_train} train, {n_validation} validation and {n_test} test"
            )
        order = np.random.default_rng(seed).permutation(n_total)
        parts = (order[:n_train], order[n_train : n_train + n_validation],
                 order[n_train + n_validation : n_train + n_validation + n_test])
        if over_plan:
            parts = tuple(np.searchsorted(self.indices, part[np.isin(part, self.indices)])
                          for part in parts)
        return DatasetSplit(*(np.sort(part) for part in parts))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
