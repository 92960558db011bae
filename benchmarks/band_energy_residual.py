"""What is left for the energy correction when the matrices come from a trained model?

PhiSNet's energy is ``E = E_nuc + 1/2 Tr[P (H_core + H)] + E_corr`` (docs/energy_models.md), ``P``
the density matrix of ``H C = S C eps``. With the exact matrices the residual
``E_ref - E_nuc - 1/2 Tr[P (H_core + H)]`` is a smooth function of the geometry that a small
atomwise correction ``E_corr`` can learn. With predicted matrices the residual also carries the
matrices' errors, weighted by the large core-Hamiltonian elements. This script measures the
residual's spread over test geometries for four combinations of predicted and reference H and
core H (S from the model with predicted H, the reference S with the reference H), to show how
accurate the matrices must be before energies can follow from them::

    python benchmarks/band_energy_residual.py potentials/ethanol-pbe-def2svp.pt \\
        data/ethanol_pbe_def2svp.h5

Reported per combination: the standard deviation of the residual and its mean absolute
deviation from its mean (meV), i.e. the energy MAE that a constant correction would leave.
The same for the band-structure energy model's electronic term ``Tr[P H]``, and, for both
energy models, the spread of the error that the predicted matrices put into the electronic
term, ``E_el(predicted) - E_el(reference)``: ``Tr[P H]`` is stationary in the density,
``1/2 Tr[P (H_core + H)]`` is not.
Results go to ``benchmarks/results/band_energy_residual_<model>.json``.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
from ase.units import Hartree

from ase_phisnet.core.errors import PhiSNetError
from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.electronic.eigensolver import solve_closed_shell
from ase_phisnet.electronic.energy import (
    band_energy_eh,
    band_structure_energy_eh,
    nuclear_repulsion_eh,
)
from ase_phisnet.electronic.model_file import load_model
from ase_phisnet.training.evaluate import trained_test_split

MEV_PER_EH = 1000 * Hartree


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
    band_rows = {"Tr[P H], reference H": "ref", "Tr[P H], predicted H": "pred"}
    residuals = {name: [] for name in [*combinations, *band_rows]}
    matrix_errors = {"phisnet: 1/2 Tr[P (H_core + H)]": [], "band_structure: Tr[P H]": []}
    n_failed = 0
    for position in list(test)[: args.n]:
        record = dataset[int(position)]
        z = torch.as_tensor(record.atomic_numbers)
        xyz = torch.as_tensor(record.positions_bohr)
        with torch.no_grad():
            out = model(z, xyz)
        matrices = {("H", "pred"): out["hamiltonian"], ("Hc", "pred"): out["core_hamiltonian"],
                    ("H", "ref"): torch.as_tensor(record.hamiltonian_eh),
                    ("Hc", "ref"): torch.as_tensor(record.core_hamiltonian_eh)}
        overlaps = {"pred": out.get("overlap", torch.as_tensor(record.overlap)),
                    "ref": torch.as_tensor(record.overlap)}
        n_occupied = int(np.sum(record.occupations > 0))
        electronic = record.energy_eh - float(nuclear_repulsion_eh(z, xyz))
        try:
            bands, solutions = {}, {}
            for h in ("ref", "pred"):
                solutions[h] = solve_closed_shell(matrices["H", h], overlaps[h], n_occupied,
                                                  derivative_order=1)
            for name, (h, hc) in combinations.items():
                bands[name] = float(band_energy_eh(solutions[h], matrices["H", h],
                                                   matrices["Hc", hc]))
            structure = {h: float(band_structure_energy_eh(solutions[h], matrices["H", h]))
                         for h in ("ref", "pred")}
        except PhiSNetError:  # indefinite predicted S or no gap: no energy at all
            n_failed += 1
            continue
        for name, band in bands.items():
            residuals[name].append(MEV_PER_EH * (electronic - band))
        for name, h in band_rows.items():  # E_nuc is part of what the atomwise term learns here
            residuals[name].append(MEV_PER_EH * (record.energy_eh - structure[h]))
        matrix_errors["phisnet: 1/2 Tr[P (H_core + H)]"].append(MEV_PER_EH * (
            bands["predicted H, predicted core H"] - bands["reference H, reference core H"]))
        matrix_errors["band_structure: Tr[P H]"].append(
            MEV_PER_EH * (structure["pred"] - structure["ref"]))
    rows = []
    for name, values in residuals.items():
        values = np.asarray(values)
        rows.append({"matrices": name, "residual_std_mev": float(values.std()),
                     "mae_after_constant_mev": float(np.abs(values - values.mean()).mean())})
        print(f"{name:32s} residual std {rows[-1]['residual_std_mev']:10.1f} meV, "
              f"MAE after a constant {rows[-1]['mae_after_constant_mev']:10.1f} meV")
    error_rows = []
    for name, values in matrix_errors.items():
        values = np.asarray(values)
        error_rows.append({"electronic_term": name, "error_std_mev": float(values.std()),
                           "error_mean_mev": float(values.mean())})
        print(f"matrix error of {name:34s} std {values.std():10.1f} meV "
              f"(mean {values.mean():.1f} meV)")
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.splitext(os.path.basename(args.model))[0]
    path = os.path.join(args.out, f"band_energy_residual_{stem}.json")
    with open(path, "w") as handle:
        json.dump({"model": args.model, "data": args.data,
                   "n_geometries": len(residuals["reference H, reference core H"]),
                   "n_failed": n_failed, "rows": rows,
                   "matrix_error_of_the_electronic_term": error_rows}, handle, indent=2)
    if n_failed:
        print(f"{n_failed} geometries left out: no energy from the predicted matrices")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
