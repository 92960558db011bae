"""Evaluation of a model on a dataset split with the PhiSNet/QHNet metrics.

Metrics (test split unless told otherwise):

* ``hamiltonian_mae_ueh``: mean absolute error of all elements of H, micro-Hartree;
* ``overlap_mae``: mean absolute error of S (dimensionless), ``core_hamiltonian_mae_ueh``;
* ``occupied_energy_mae_ueh``: MAE of the occupied orbital energies of ``H C = S C eps``;
* ``occupied_cosine_similarity_pct``: mean over occupied orbitals of
  ``|<c_pred, c_ref>| / (|c_pred| |c_ref|)`` of the AO coefficient vectors, in percent (the sign
  of an eigenvector is arbitrary, hence the absolute value; for degenerate orbitals the
  subspace is what is defined, so the metric under-reports there, as in the literature).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from ase_phisnet.dataset import HamiltonianDataset
from ase_phisnet.model import PhiSNet

MICRO = 1e6


@dataclass
class Metrics:
    n_geometries: int
    hamiltonian_mae_ueh: float
    overlap_mae: float | None
    core_hamiltonian_mae_ueh: float | None
    occupied_energy_mae_ueh: float
    occupied_cosine_similarity_pct: float
    seconds_per_geometry: float
    n_indefinite_overlap: int = 0  # predicted S not positive definite: reference S used there

    def table(self) -> str:
        rows = [
            ("geometries", f"{self.n_geometries}"),
            ("H MAE", f"{self.hamiltonian_mae_ueh:.2f} µEh"),
            ("S MAE", "-" if self.overlap_mae is None else f"{self.overlap_mae:.2e}"),
            ("core H MAE", "-" if self.core_hamiltonian_mae_ueh is None
             else f"{self.core_hamiltonian_mae_ueh:.2f} µEh"),
            ("occupied ε MAE", f"{self.occupied_energy_mae_ueh:.2f} µEh"),
            ("occupied orbital |cos|", f"{self.occupied_cosine_similarity_pct:.3f} %"),
            ("model time", f"{1000 * self.seconds_per_geometry:.2f} ms/geometry"),
        ]
        if self.n_indefinite_overlap:
            rows.append(("indefinite predicted S", f"{self.n_indefinite_overlap} (reference S "
                         "used for their orbitals)"))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)


def occupied_orbitals(hamiltonian: np.ndarray, overlap: np.ndarray, n_occupied: int):
    """Occupied ``(eps (n_occ,), C (nao, n_occ))`` of ``H C = S C eps`` (SciPy, float64)."""
    eps, coefficients = scipy.linalg.eigh(hamiltonian, overlap)
    return eps[:n_occupied], coefficients[:, :n_occupied]


@torch.no_grad()
def evaluate_model(model: PhiSNet, dataset: HamiltonianDataset, positions,
                   batch_size: int = 16) -> Metrics:
    """Metrics of ``model`` over the records at ``positions`` of ``dataset``."""
    import time

    model.eval()
    dtype = next(model.parameters()).dtype
    errors = {name: [] for name in model.config.matrices}
    energy_errors, cosines, n_indefinite = [], [], 0
    elapsed = 0.0
    positions = list(positions)
    for first in range(0, len(positions), batch_size):
        records = [dataset[int(p)] for p in positions[first : first + batch_size]]
        z = torch.as_tensor(records[0].atomic_numbers)
        xyz = torch.as_tensor(np.stack([r.positions_bohr for r in records]), dtype=dtype)
        start = time.perf_counter()
        predicted = {k: v.double().cpu().numpy() for k, v in model(z, xyz).items()}
        elapsed += time.perf_counter() - start
        for b, record in enumerate(records):
            reference = {"hamiltonian": record.hamiltonian_eh, "overlap": record.overlap,
                         "core_hamiltonian": record.core_hamiltonian_eh}
            for name in errors:
                errors[name].append(np.abs(predicted[name][b] - reference[name]).ravel())
            n_occ = int(np.sum(record.occupations > 0))
            overlap_pred = predicted["overlap"][b] if "overlap" in predicted else record.overlap
            if np.linalg.eigvalsh(overlap_pred)[0] <= 0:
                n_indefinite += 1
                overlap_pred = record.overlap
            eps_pred, c_pred = occupied_orbitals(predicted["hamiltonian"][b], overlap_pred, n_occ)
            eps_ref, c_ref = occupied_orbitals(record.hamiltonian_eh, record.overlap, n_occ)
            energy_errors.append(np.abs(eps_pred - eps_ref))
            dots = np.abs(np.sum(c_pred * c_ref, axis=0))
            cosines.append(dots / (np.linalg.norm(c_pred, axis=0) * np.linalg.norm(c_ref, axis=0)))
    mean = {name: float(np.mean(np.concatenate(values))) for name, values in errors.items()}
    return Metrics(
        n_geometries=len(positions),
        hamiltonian_mae_ueh=MICRO * mean["hamiltonian"],
        overlap_mae=mean.get("overlap"),
        core_hamiltonian_mae_ueh=(MICRO * mean["core_hamiltonian"]
                                  if "core_hamiltonian" in mean else None),
        occupied_energy_mae_ueh=MICRO * float(np.mean(np.concatenate(energy_errors))),
        occupied_cosine_similarity_pct=100 * float(np.mean(np.concatenate(cosines))),
        seconds_per_geometry=elapsed / max(len(positions), 1),
        n_indefinite_overlap=n_indefinite,
    )


def trained_test_split(model_json: dict, dataset: HamiltonianDataset):
    """The test split a model was trained with (from its JSON), on ``dataset``."""
    training = model_json.get("training")
    if not training:
        raise ValueError("the model file records no training split; pass --split-seed, "
                         "--n-train and --n-validation")
    split = training["split"]
    return dataset.split(split["seed"], split["n_train"], split["n_validation"],
                         split["n_test"]).test
