"""Evaluation of a model on a dataset split with the PhiSNet/QHNet metrics.

Metrics (test split unless told otherwise):

* ``hamiltonian_mae_ueh``: mean absolute error of all elements of H, micro-Hartree;
* ``overlap_mae``: mean absolute error of S (dimensionless), ``core_hamiltonian_mae_ueh``;
* ``occupied_energy_mae_ueh``: MAE of the occupied orbital energies of ``H C = S C eps``;
* ``dipole_mae_debye``: MAE of the dipole-moment components ``sum_A Z_A R_A - Tr[P r]`` of the
  predicted density matrix (an electronic property the orbitals alone do not show);
* ``occupied_cosine_similarity_pct``: mean over occupied orbitals of
  ``|<c_pred, c_ref>| / (|c_pred| |c_ref|)`` of the AO coefficient vectors, in percent (the sign
  of an eigenvector is arbitrary, hence the absolute value; for degenerate orbitals the
  subspace is what is defined, so the metric under-reports there, as in the literature).

For models that output every matrix their energy model needs
(:mod:`ase_phisnet.electronic.energy`):

* ``energy_mae_mev`` / ``energy_mae_kcal_mol``: total-energy MAE;
* ``force_mae_mev_per_ang`` / ``force_mae_kcal_mol_per_ang``: MAE of all force components;
* ``force_max_error_mev_per_ang``: the largest error of one atom's force vector,
  ``max |F - F_ref|``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from ase.units import Bohr, Debye, Hartree, kcal, mol

from ase_phisnet.core.errors import ElectronCountError, PhiSNetError
from ase_phisnet.core.integrals import position_integrals
from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.electronic.model import PhiSNetModel
from ase_phisnet.electronic.observables import charge_center_bohr, dipole_moment_e_bohr
from ase_phisnet.training.data import recorded_split

MICRO = 1e6
MEV_PER_EH = 1000 * Hartree
KCAL_MOL_PER_EH = Hartree / (kcal / mol)
DEBYE_IN_E_BOHR = Debye / Bohr  # 1 D in e·Bohr


@dataclass
class Metrics:
    n_geometries: int
    hamiltonian_mae_ueh: float
    overlap_mae: float | None
    core_hamiltonian_mae_ueh: float | None
    occupied_energy_mae_ueh: float
    occupied_cosine_similarity_pct: float
    dipole_mae_debye: float
    seconds_per_geometry: float
    n_indefinite_overlap: int = 0  # predicted S not positive definite: reference S used there
    n_energy_failed: int = 0  # no energy from the predicted matrices (e.g. S indefinite)
    energy_mae_mev: float | None = None
    energy_mae_kcal_mol: float | None = None
    force_mae_mev_per_ang: float | None = None
    force_mae_kcal_mol_per_ang: float | None = None
    force_max_error_mev_per_ang: float | None = None

    def table(self) -> str:
        rows = [
            ("geometries", f"{self.n_geometries}"),
            ("H MAE", f"{self.hamiltonian_mae_ueh:.2f} µEh"),
            ("S MAE", "-" if self.overlap_mae is None else f"{self.overlap_mae:.2e}"),
            ("core H MAE", "-" if self.core_hamiltonian_mae_ueh is None
             else f"{self.core_hamiltonian_mae_ueh:.2f} µEh"),
            ("occupied ε MAE", f"{self.occupied_energy_mae_ueh:.2f} µEh"),
            ("occupied orbital |cos|", f"{self.occupied_cosine_similarity_pct:.3f} %"),
            ("dipole MAE (per component)", f"{self.dipole_mae_debye:.4f} D"),
            ("model time", f"{1000 * self.seconds_per_geometry:.2f} ms/geometry"),
        ]
        if self.energy_mae_mev is not None:
            rows += [
                ("energy MAE", f"{self.energy_mae_mev:.3f} meV "
                 f"({self.energy_mae_kcal_mol:.4f} kcal/mol)"),
                ("force MAE", f"{self.force_mae_mev_per_ang:.2f} meV/Å "
                 f"({self.force_mae_kcal_mol_per_ang:.4f} kcal/mol/Å)"),
                ("largest force error", f"{self.force_max_error_mev_per_ang:.1f} meV/Å"),
            ]
        if self.n_energy_failed:
            rows.append(("no energy", f"{self.n_energy_failed} geometries (predicted S "
                         "indefinite or no HOMO-LUMO gap): left out of the energy metrics"))
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


def energy_force_errors(model: PhiSNetModel, records,
                        charge: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(energy errors (B,) in Eh, force errors (B, A, 3) in Eh/Bohr)`` of records of one
    molecule with total ``charge`` (e), prediction minus reference, energies from the model's
    energy model."""
    from ase_phisnet.electronic.model import predict_energies_forces

    energy, forces = predict_energies_forces(
        model, torch.as_tensor(records[0].atomic_numbers),
        np.stack([r.positions_bohr for r in records]), batch_size=len(records), charge=charge)
    return (energy - np.array([r.energy_eh for r in records]),
            forces - np.stack([r.forces_eh_per_bohr for r in records]))


def _dipole_error_e_bohr(occupied_coefficients, r_integrals, record, n_occupied) -> np.ndarray:
    """Predicted minus reference dipole (3,) in e·Bohr, both about the centre of nuclear charge
    (``r_integrals`` from :func:`~ase_phisnet.core.integrals.position_integrals`)."""
    z = torch.as_tensor(record.atomic_numbers)
    positions = torch.as_tensor(record.positions_bohr)
    center = charge_center_bohr(z, positions)
    density = 2 * torch.as_tensor(occupied_coefficients @ occupied_coefficients.T)
    predicted = dipole_moment_e_bohr(density, torch.as_tensor(r_integrals), z, positions,
                                     origin_bohr=center)
    net_charge = int(record.atomic_numbers.sum()) - 2 * n_occupied
    return (predicted - (torch.as_tensor(record.dipole_e_bohr) - net_charge * center)).numpy()


def _energy_force_metrics(energy_errors, force_errors) -> dict:
    energy = np.abs(np.concatenate(energy_errors))
    forces = np.concatenate(force_errors)  # (n, A, 3), Eh/Bohr
    to_mev_per_ang = MEV_PER_EH / Bohr
    return {
        "energy_mae_mev": MEV_PER_EH * float(energy.mean()),
        "energy_mae_kcal_mol": KCAL_MOL_PER_EH * float(energy.mean()),
        "force_mae_mev_per_ang": to_mev_per_ang * float(np.abs(forces).mean()),
        "force_mae_kcal_mol_per_ang": KCAL_MOL_PER_EH / Bohr * float(np.abs(forces).mean()),
        "force_max_error_mev_per_ang": to_mev_per_ang
        * float(np.linalg.norm(forces, axis=-1).max()),
    }


def evaluate_model(model: PhiSNetModel, dataset: HamiltonianDataset, positions,
                   batch_size: int = 16, energies: bool | None = None) -> Metrics:
    """Metrics of ``model`` over the records at ``positions`` of ``dataset``.

    ``energies``: also energy and force errors (default: when the model predicts the matrices
    its energy model needs, ``config.predicts_energy``).
    """
    import time

    model.eval()
    matrices = model.config.output_matrices
    if energies is None:
        energies = model.config.predicts_energy
    dtype = next(model.parameters()).dtype
    errors = {name: [] for name in sorted(matrices)}
    energy_errors, cosines, dipole_errors, n_indefinite = [], [], [], 0
    total_energy_errors, force_errors, n_energy_failed = [], [], 0
    elapsed = 0.0
    positions = list(positions)
    charge = dataset.metadata.theory.charge
    for first in range(0, len(positions), batch_size):
        records = [dataset[int(p)] for p in positions[first : first + batch_size]]
        z = torch.as_tensor(records[0].atomic_numbers)
        xyz = torch.as_tensor(np.stack([r.positions_bohr for r in records]), dtype=dtype)
        start = time.perf_counter()
        with torch.no_grad():
            predicted = {k: v.double().cpu().numpy() for k, v in model(z, xyz).items()}
        elapsed += time.perf_counter() - start
        if energies:
            try:
                batch_errors = [energy_force_errors(model, records, charge)]
            except ElectronCountError:  # the charge, not a geometry: every record fails
                raise
            except PhiSNetError:  # e.g. an indefinite predicted S: find which, skip those
                batch_errors = []
                for record in records:
                    try:
                        batch_errors.append(energy_force_errors(model, [record], charge))
                    except PhiSNetError:
                        n_energy_failed += 1
            total_energy_errors += [energy for energy, _ in batch_errors]
            force_errors += [forces for _, forces in batch_errors]
        r_integrals = position_integrals(records[0].atomic_numbers,
                                         [r.positions_bohr for r in records], model.config.basis)
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
            dipole_errors.append(np.abs(_dipole_error_e_bohr(
                c_pred, r_integrals[b], record, n_occ)))
            dots = np.abs(np.sum(c_pred * c_ref, axis=0))
            cosines.append(dots / (np.linalg.norm(c_pred, axis=0) * np.linalg.norm(c_ref, axis=0)))
    mean = {name: float(np.mean(np.concatenate(values))) for name, values in errors.items()}
    extra = (_energy_force_metrics(total_energy_errors, force_errors)
             if total_energy_errors else {})
    return Metrics(
        n_geometries=len(positions),
        hamiltonian_mae_ueh=MICRO * mean["hamiltonian"],
        overlap_mae=mean.get("overlap"),
        core_hamiltonian_mae_ueh=(MICRO * mean["core_hamiltonian"]
                                  if "core_hamiltonian" in mean else None),
        occupied_energy_mae_ueh=MICRO * float(np.mean(np.concatenate(energy_errors))),
        occupied_cosine_similarity_pct=100 * float(np.mean(np.concatenate(cosines))),
        dipole_mae_debye=float(np.mean(np.concatenate(dipole_errors))) / DEBYE_IN_E_BOHR,
        seconds_per_geometry=elapsed / max(len(positions), 1),
        n_indefinite_overlap=n_indefinite,
        n_energy_failed=n_energy_failed,
        **extra,
    )


def trained_test_split(model_json: dict, dataset: HamiltonianDataset):
    """The test split a model was trained with (from its JSON), on ``dataset``: the split of
    the ``extra_data`` file of the same name if ``dataset`` is one, else the main file's."""
    training = model_json.get("training")
    if not training:
        raise ValueError("the model file records no training split; pass --split-seed, "
                         "--n-train and --n-validation")
    split = training["split"]
    for extra in training.get("extra_data", []):
        if os.path.basename(extra["dataset"]) == os.path.basename(dataset.path):
            split = extra["split"]
    return recorded_split(dataset, split).test
