"""SCF warm start: PySCF iterations from a PhiSNet density matrix vs PySCF's own initial guesses.

On held-out geometries (the test split recorded in the model file), run the model's level of
theory (from the model file: PBE/def2-SVP, conv_tol 1e-10 Eh for the shipped water potentials)
from the 'minao' (PySCF's default), 'atom' and 'huckel' guesses and from the potential's
predicted density matrix; report SCF iterations, wall time (the warm start includes the model
call) and the largest difference of the converged energies.

    python benchmarks/warm_start.py --model water-pbe-def2svp \\
        --data data/water_pbe_def2svp.h5 [--n 20] [--out benchmarks/results]

Writes ``warm_start_<model>.json`` and ``warm_start_<model>.png``.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from ase import Atoms
from ase.units import Bohr
from tqdm import tqdm

from ase_phisnet import PhiSNetCalculator
from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.interface.wavefunction import (
    mean_field_from_atoms,
    model_theory,
    run_scf,
    warm_start_scf,
)
from ase_phisnet.training.evaluate import trained_test_split

GUESSES = ("minao", "atom", "huckel")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="water-pbe-def2svp")
    parser.add_argument("--data", default="data/water_pbe_def2svp.h5")
    parser.add_argument("--n", type=int, default=20, help="test geometries")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    calc = PhiSNetCalculator(args.model)
    theory = model_theory(calc)
    dataset = HamiltonianDataset(args.data)
    positions = trained_test_split(calc.metadata, dataset)[: args.n]
    runs = {guess: [] for guess in (*GUESSES, "phisnet")}
    for index in tqdm(positions, desc="geometries"):
        record = dataset[int(index)]
        atoms = Atoms(numbers=record.atomic_numbers, positions=record.positions_bohr * Bohr)
        for guess in GUESSES:
            _, mf = mean_field_from_atoms(atoms, theory)
            runs[guess].append(run_scf(mf, guess))
        runs["phisnet"].append(warm_start_scf(atoms, calc, theory)[0])

    reference = np.array([run.energy_eh for run in runs["minao"]])
    summary = {}
    for guess, results in runs.items():
        cycles = np.array([run.cycles for run in results])
        summary[guess] = {
            "mean_cycles": float(cycles.mean()),
            "cycles": cycles.tolist(),
            "mean_wall_time_s": float(np.mean([run.wall_time_s for run in results])),
            "all_converged": all(run.converged for run in results),
            "max_energy_difference_from_minao_eh": float(np.abs(
                np.array([run.energy_eh for run in results]) - reference).max()),
        }
    saving = 1 - summary["phisnet"]["mean_cycles"] / summary["minao"]["mean_cycles"]
    result = {"model": args.model, "theory": theory.to_dict(), "n_geometries": len(positions),
              "dataset": os.path.basename(args.data), "guesses": summary,
              "phisnet_fewer_cycles_than_minao_pct": 100 * saving}

    print(f"{len(positions)} test geometries, {theory.xc.upper()}/{theory.basis}, "
          f"conv_tol {theory.conv_tol:g} Eh")
    print(f"{'guess':<10}{'cycles':>8}{'time (s)':>10}{'max |dE| (Eh)':>16}")
    for guess, row in summary.items():
        print(f"{guess:<10}{row['mean_cycles']:>8.2f}{row['mean_wall_time_s']:>10.2f}"
              f"{row['max_energy_difference_from_minao_eh']:>16.1e}")
    print(f"PhiSNet guess: {100 * saving:.0f} % fewer SCF iterations than minao")

    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"warm_start_{args.model.replace('/', '_')}")
    with open(stem + ".json", "w") as handle:
        json.dump(result, handle, indent=2)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    names = list(summary)
    axis.bar(names, [summary[name]["mean_cycles"] for name in names],
             color=["0.6"] * len(GUESSES) + ["tab:blue"])
    axis.set_ylabel("mean SCF iterations")
    axis.set_title(f"{args.model}: {len(positions)} test geometries")
    figure.tight_layout()
    figure.savefig(stem + ".png", dpi=120)


if __name__ == "__main__":
    main()
