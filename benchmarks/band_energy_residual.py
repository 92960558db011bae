"""What is left for the energy correction when the matrices come from a trained model?

PhiSNet's energy is ``E = E_nuc + 1/2 Tr[P (H_core + H)] + E_corr`` (README, "The energy
model"), ``P`` the density matrix of ``H C = S C eps``. With the exact matrices the residual
``E_ref - E_nuc - 1/2 Tr[P (H_core + H)]`` is a smooth function of the geometry that a small
atomwise correction ``E_corr`` can learn. With predicted matrices the residual also carries the
matrices' errors, weighted by the large core-Hamiltonian elements. This script measures the
residual's spread over test geometries for four combinations of predicted and reference H and
core H (S from the model where it predicts or computes one), to show how accurate the matrices
must be before energies can follow from them::

    python benchmarks/band_energy_residual.py potentials/water-pbe-def2svp-orbitals.pt \\
        data/water_pbe_def2svp.h5
    python benchmarks/band_energy_residual.py potentials/ethanol-pbe-def2svp-orbitals.pt \\
        data/ethanol_pbe_def2svp.h5

Reported per combination: the standard deviation of the residual and its mean absolute
deviation from its mean (meV), i.e. the energy MAE that a constant correction would leave.
Results go to ``benchmarks/results/band_energy_residual_<model>.json``.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import scipy.linalg
import torch
from ase.units import Hartree

from ase_phisnet.dataset import HamiltonianDataset
from ase_phisnet.evaluate import trained_test_split
from ase_phisnet.model import load_model

MEV_PER_EH = 1000 * Hartree


def band_energy_eh(hamiltonian, overlap, core_hamiltonian, n_occupied) -> float:
    """``1/2 Tr[P (H_core + H)]`` in Eh for a closed shell (SciPy, float64)."""
    _, orbitals = scipy.linalg.eigh(hamiltonian, overlap)
    occupied = orbitals[:, :n_occupied]
    density = 2 * occupied @ occupied.T
    return 0.5 * float(np.sum(density * (core_hamiltonian + hamiltonian)))


def nuclear_repulsion_eh(atomic_numbers, positions_bohr) -> float:
    distances = np.linalg.norm(positions_bohr[:, None] - positions_bohr[None], axis=-1)
    charges = np.outer(atomic_numbers, atomic_numbers).astype(float)
    upper = np.triu_indices(len(atomic_numbers), k=1)
    return float(np.sum(charges[upper] / distances[upper]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model file that predicts H and core H")
    parser.add_argument("data", help="the data set it was trained on (its test split is used)")
    parser.add_argument("--n", type=int, default=100, help="test geometries (at most)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    model = load_model(args.model).double().eval()
    missing = {"hamiltonian", "core_hamiltonian"} - set(model.config.matrices)
    if missing:
        parser.error(f"{args.model} does not predict {sorted(missing)}")
    with open(args.model + ".json") as handle:
        test = trained_test_split(json.load(handle), dataset := HamiltonianDataset(args.data))
    combinations = {"reference H, reference core H": ("ref", "ref"),
                    "predicted H, predicted core H": ("pred", "pred"),
                    "predicted H, reference core H": ("pred", "ref"),
                    "reference H, predicted core H": ("ref", "pred")}
    residuals = {name: [] for name in combinations}
    for position in list(test)[: args.n]:
        record = dataset[int(position)]
        with torch.no_grad():
            out = model(torch.as_tensor(record.atomic_numbers),
                        torch.as_tensor(record.positions_bohr))
        matrices = {("H", "pred"): out["hamiltonian"].numpy(),
                    ("H", "ref"): record.hamiltonian_eh,
                    ("Hc", "pred"): out["core_hamiltonian"].numpy(),
                    ("Hc", "ref"): record.core_hamiltonian_eh}
        overlap = out["overlap"].numpy() if "overlap" in out else record.overlap
        n_occupied = int(np.sum(record.occupations > 0))
        electronic = record.energy_eh - nuclear_repulsion_eh(record.atomic_numbers,
                                                             record.positions_bohr)
        for name, (h, hc) in combinations.items():
            band = band_energy_eh(matrices["H", h], overlap, matrices["Hc", hc], n_occupied)
            residuals[name].append(MEV_PER_EH * (electronic - band))
    rows = []
    for name, values in residuals.items():
        values = np.asarray(values)
        rows.append({"matrices": name, "residual_std_mev": float(values.std()),
                     "mae_after_constant_mev": float(np.abs(values - values.mean()).mean())})
        print(f"{name:32s} residual std {rows[-1]['residual_std_mev']:10.1f} meV, "
              f"MAE after a constant {rows[-1]['mae_after_constant_mev']:10.1f} meV")
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.splitext(os.path.basename(args.model))[0]
    path = os.path.join(args.out, f"band_energy_residual_{stem}.json")
    with open(path, "w") as handle:
        json.dump({"model": args.model, "data": args.data, "n_geometries": len(residuals[name]),
                   "rows": rows}, handle, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
