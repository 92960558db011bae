"""High-level reference energies and forces (PySCF coupled cluster) for transfer learning.

A PhiSNet potential trained on DFT Hamiltonians can have its energy path fine-tuned on a few
hundred energies and forces of a better method (:mod:`ase_phisnet.training.transfer`). This module
makes those references:

* ``"ccsd(t)"``: RHF -> CCSD -> (T), all electrons, energy ``E_CCSD(T)`` and analytic forces
  ``-dE_CCSD(T)/dR`` from PySCF's CCSD(T) gradients (``pyscf.grad.ccsd_t``) with the
  CCSD(T) lambda equations solved explicitly (matches finite differences to 1e-8 Eh/Bohr);
* ``"ccsd"``: the same without (T).

Units: Eh, Bohr, Eh/Bohr. Files are small HDF5 tables (format ``ase-phisnet-energies``,
version 1)::

    /                attrs: format, format_version, method, basis, source (JSON)
    /atomic_numbers  (N,)        int64
    /positions_bohr  (n, N, 3)   float64   every geometry planned
    /energy_eh       (n,)        float64   NaN until computed
    /forces_eh_per_bohr (n, N, 3) float64  NaN until computed

Re-running :func:`generate_energies` on an existing file computes only the missing rows.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import h5py
import numpy as np

from ase_phisnet.core.errors import DatasetFileError, SCFNotConvergedError
from ase_phisnet.core.molecule import build_molecule

FORMAT, FORMAT_VERSION = "ase-phisnet-energies", 1
METHODS = ("ccsd(t)", "ccsd")


def coupled_cluster(atomic_numbers, positions_bohr, basis: str, method: str = "ccsd(t)",
                    charge: int = 0) -> tuple[float, np.ndarray]:
    """``(energy Eh, forces (N, 3) Eh/Bohr)`` of a closed-shell molecule by PySCF CC."""
    from pyscf import cc, scf
    from pyscf.grad import ccsd as ccsd_grad
    from pyscf.grad import ccsd_t as ccsd_t_grad

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    mol = build_molecule(atomic_numbers, positions_bohr, basis, charge)
    mf = scf.RHF(mol)
    mf.conv_tol, mf.verbose = 1e-11, 0
    mf.kernel()
    solver = cc.CCSD(mf)
    solver.conv_tol, solver.conv_tol_normt = 1e-10, 1e-8
    solver.kernel()
    if not (mf.converged and solver.converged):
        raise SCFNotConvergedError(f"{method} did not converge (RHF {mf.converged}, "
                                   f"CCSD {solver.converged})")
    if method == "ccsd":
        return float(solver.e_tot), -ccsd_grad.Gradients(solver).kernel()
    # The (T) gradient needs the lambda amplitudes of the CCSD(T) functional; PySCF's default
    # (CCSD lambdas) is off by ~3e-5 Eh/Bohr against finite differences (tested).
    from pyscf.cc import ccsd_t_lambda_slow

    eris = solver.ao2mo()
    triples = solver.ccsd_t(eris=eris)
    converged, l1, l2 = ccsd_t_lambda_slow.kernel(solver, eris, solver.t1, solver.t2,
                                                   tol=1e-9, verbose=0)
    if not converged:
        raise SCFNotConvergedError("CCSD(T) lambda equations did not converge")
    gradient = ccsd_t_grad.Gradients(solver).kernel(solver.t1, solver.t2, l1, l2, eris=eris)
    return float(solver.e_tot + triples), -gradient


@dataclass
class EnergyData:
    """Geometries with high-level energies and forces (a.u.; rows with NaN not computed)."""

    atomic_numbers: np.ndarray
    positions_bohr: np.ndarray
    energy_eh: np.ndarray
    forces_eh_per_bohr: np.ndarray
    method: str
    basis: str

    @classmethod
    def read(cls, path) -> EnergyData:
        with h5py.File(path, "r") as handle:
            if handle.attrs.get("format") != FORMAT:
                raise DatasetFileError(f"{path} is not an {FORMAT} file")
            if int(handle.attrs["format_version"]) != FORMAT_VERSION:
                raise DatasetFileError(f"{path}: format version {handle.attrs['format_version']}"
                                       f", this package reads {FORMAT_VERSION}")
            return cls(handle["atomic_numbers"][()], handle["positions_bohr"][()],
                       handle["energy_eh"][()], handle["forces_eh_per_bohr"][()],
                       str(handle.attrs["method"]), str(handle.attrs["basis"]))

    @property
    def complete(self) -> np.ndarray:
        """Boolean mask of the computed rows."""
        return np.isfinite(self.energy_eh)


def generate_energies(path, atomic_numbers, positions_bohr, basis: str, method: str = "ccsd(t)",
                      source: dict | None = None, progress: bool = True) -> EnergyData:
    """Compute (or resume) high-level energies and forces for ``positions_bohr (n, N, 3)``.

    Each row is written and flushed as soon as it is done; an existing file must hold the same
    geometries, method and basis (otherwise a :class:`DatasetFileError`).
    """
    positions_bohr = np.asarray(positions_bohr, dtype=float)
    atomic_numbers = np.asarray(atomic_numbers, dtype=np.int64)
    if not os.path.exists(path):
        with h5py.File(path, "w") as handle:
            handle.attrs.update(format=FORMAT, format_version=FORMAT_VERSION, method=method,
                                basis=basis, source=json.dumps(source or {}))
            handle["atomic_numbers"] = atomic_numbers
            handle["positions_bohr"] = positions_bohr
            handle["energy_eh"] = np.full(len(positions_bohr), np.nan)
            handle["forces_eh_per_bohr"] = np.full(positions_bohr.shape, np.nan)
    existing = EnergyData.read(path)
    if (existing.method, existing.basis) != (method, basis) or not np.array_equal(
            existing.positions_bohr, positions_bohr):
        raise DatasetFileError(f"{path} holds other geometries or another method/basis "
                               f"({existing.method}/{existing.basis}); use a new file")
    todo = np.flatnonzero(~existing.complete)
    iterator = todo
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(todo, desc=f"{method}/{basis}", unit="geometry")
    for row in iterator:
        start = time.perf_counter()
        energy, forces = coupled_cluster(atomic_numbers, positions_bohr[row], basis, method)
        with h5py.File(path, "a") as handle:
            handle["forces_eh_per_bohr"][row] = forces
            handle["energy_eh"][row] = energy  # last: a row counts once its energy is there
            handle.attrs[f"wall_time_s_{row}"] = time.perf_counter() - start
    return EnergyData.read(path)
