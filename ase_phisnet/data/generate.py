"""Reference-data generation: sample geometries, run PySCF on each, append to a dataset file.

The PySCF calculations run on any :class:`concurrent.futures.Executor`: in this process
(``workers=1``), on local processes (``workers > 1``), or on an executor the caller brings, such as
a Dask cluster's ``distributed.Client(...).get_executor()``. Only the calling process writes the
file; each finished record is flushed at once, so a run killed at any point resumes with exactly
the geometries it had not finished (see :mod:`ase_phisnet.data.dataset`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
from ase.units import Bohr

from ase_phisnet.core.basis import BasisLayout
from ase_phisnet.core.errors import DatasetFileError, SCFNotConvergedError
from ase_phisnet.core.molecule import check_closed_shell
from ase_phisnet.data.dataset import DatasetWriter, new_metadata
from ase_phisnet.data.reference import Theory, compute_reference
from ase_phisnet.data.sampling import (
    SamplerConfig,
    resolve_molecule,
    sample_geometries,
    sample_temperatures,
    tblite_available,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSummary:
    """Outcome of one :func:`generate_dataset` call."""

    path: str
    n_planned: int
    n_records: int
    n_failed: int
    n_computed_this_run: int
    wall_time_s: float


def _compute_one(index: int, atomic_numbers, positions_bohr, theory: Theory):
    """Worker task: ``(index, record, None)`` or ``(index, None, reason)`` if the SCF failed."""
    try:
        return index, compute_reference(atomic_numbers, positions_bohr, theory), None
    except SCFNotConvergedError as error:
        return index, None, str(error)


def _limit_threads(n_threads: int) -> None:
    """Process-pool initializer: share the machine's cores between worker processes."""
    from pyscf import lib

    lib.num_threads(n_threads)


def _sampler_recipe(config: SamplerConfig) -> dict:
    recipe = dataclasses.asdict(config)
    recipe["temperatures_k"] = list(recipe["temperatures_k"])
    # Options left at "off" stay out of the recipe, so files from before they existed match.
    for name in ("bond_stretch", "angle_scale"):
        if getattr(config, name) is None:
            del recipe[name]
        else:
            recipe[name] = list(getattr(config, name))
    if config.rattle_ang == 0:
        del recipe["rattle_ang"]
    if config.geometries_path is None:
        del recipe["geometries_path"]
    if config.calculator == "auto":
        recipe["calculator"] = "gfn2" if tblite_available() else "pyscf"
    return recipe


def _open_or_plan(molecule, n, theory, sampler, out, progress) -> DatasetWriter:
    """Resume ``out`` if it exists (checking it asks for the same data), else sample and create."""
    recipe = _sampler_recipe(sampler)
    if os.path.exists(out):
        writer = DatasetWriter.resume(out)
        existing = writer.metadata
        stored = dict(existing.sampler)
        if sampler.calculator == "auto":  # resolved on the first machine; do not re-resolve
            stored.pop("calculator", None)
            recipe.pop("calculator")
        wanted = (molecule, theory, recipe, n)
        found = (existing.molecule, existing.theory, stored, existing.n_planned)
        if wanted != found:
            writer.close()
            raise DatasetFileError(
                f"{out} already holds a different dataset: molecule {existing.molecule!r}, "
                f"{existing.theory}, sampler {existing.sampler}, n={existing.n_planned}. "
                "Resume with the same settings or write to another file."
            )
        return writer
    atoms = resolve_molecule(molecule)
    check_closed_shell(atoms.numbers, theory.charge)
    BasisLayout(theory.basis, list(set(atoms.numbers.tolist())))  # fail before sampling
    positions_ang = sample_geometries(atoms, n, sampler, progress=progress)
    metadata = new_metadata(molecule, theory, recipe, n)
    return DatasetWriter.create_or_resume(
        out, metadata, atoms.numbers, positions_ang / Bohr, sample_temperatures(n, sampler)
    )


def computation_order(pending: list[int], n_planned: int) -> list[int]:
    """The plan rows in ``pending`` in the order they are computed: a fixed pseudo-random
    permutation of the whole plan, so that the records of a run stopped part-way are a uniform
    sample of the plan rather than its first rows, which hold the first temperature only (a
    half-generated 300/500 K set would otherwise hold no 500 K geometry). Its random stream is
    one no integer seed gives (a spawned SeedSequence): were it the permutation of an
    ``over_plan`` split (``HamiltonianDataset.split``), a part-generated file would hold that
    split's training rows only."""
    stream = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(1,)))
    rank = np.empty(n_planned, dtype=np.int64)
    rank[stream.permutation(n_planned)] = np.arange(n_planned)
    return sorted(pending, key=lambda index: rank[index])


def plan_dataset(molecule: str, n: int, theory: Theory, sampler: SamplerConfig,
                 out: str | os.PathLike, progress: bool = True) -> np.ndarray:
    """Sample and store the ``n`` geometries of a dataset without computing any reference
    (or check an existing file's plan against these settings); :func:`generate_dataset` with the
    same arguments later computes them. Returns the planned positions, ``(n, N, 3)`` Bohr."""
    with _open_or_plan(molecule, n, theory, sampler, os.fspath(out), progress) as writer:
        return writer.plan()[1]


def generate_dataset(
    molecule: str,
    n: int,
    theory: Theory,
    sampler: SamplerConfig,
    out: str | os.PathLike,
    workers: int = 1,
    executor: Executor | None = None,
    progress: bool = True,
) -> GenerationSummary:
    """Make (or finish) a reference dataset of ``n`` geometries of ``molecule`` at ``theory``.

    Args:
        molecule: ASE collection name (``"H2O"``) or a structure file.
        n: Number of geometries planned.
        theory: PySCF reference level.
        sampler: How geometries are drawn.
        out: HDF5 dataset path; if it exists, the run resumes it.
        workers: Local worker processes when no ``executor`` is given (1: run in-process).
        executor: Any ``concurrent.futures.Executor`` (e.g. a Dask client's executor).
        progress: Show progress bars.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    out = os.fspath(out)
    with _open_or_plan(molecule, n, theory, sampler, out, progress) as writer:
        atomic_numbers, positions_bohr = writer.plan()
        pending = computation_order(writer.pending_indices(), n)
        n_done_before = len(writer.done_indices())
        bar = tqdm(total=n, initial=n - len(pending), desc=f"PySCF {theory.xc}/{theory.basis}",
                   disable=not progress, unit="geom")

        def store(index, record, reason):
            if record is None:
                logger.warning("geometry %d failed: %s", index, reason)
                writer.write_failure(index, reason)
            else:
                writer.write_record(index, record)
                logger.info("record %d written (%d SCF cycles, %.2f s)", index,
                            record.scf_cycles, record.wall_time_s)
            bar.update(1)

        own_executor = None
        if executor is None and workers > 1:
            import multiprocessing

            threads = max(1, (os.cpu_count() or 1) // workers)
            own_executor = executor = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_limit_threads, initargs=(threads,),
            )
        try:
            if executor is None:
                for index in pending:
                    store(*_compute_one(index, atomic_numbers, positions_bohr[index], theory))
            else:
                futures = [
                    executor.submit(_compute_one, i, atomic_numbers, positions_bohr[i], theory)
                    for i in pending
                ]
                try:
                    for future in as_completed(futures):
                        store(*future.result())
                finally:
                    for future in futures:
                        future.cancel()
        finally:
            bar.close()
            if own_executor is not None:
                own_executor.shutdown(wait=True, cancel_futures=True)
        n_records = len(writer.done_indices())
        n_failed = len(writer.failed_indices())
    return GenerationSummary(
        path=out,
        n_planned=n,
        n_records=n_records,
        n_failed=n_failed,
        n_computed_this_run=n_records - n_done_before,
        wall_time_s=time.perf_counter() - start,
    )

