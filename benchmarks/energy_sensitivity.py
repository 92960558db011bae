"""How sensitive is PhiSNet's energy to errors of the predicted Hamiltonian?

Takes reference PBE/def2-SVP water records, adds symmetric Gaussian noise of a given size to the
exact H (S and core H exact), and reports the mean absolute change of PhiSNet's electronic
energy ``1/2 Tr[P (H_core + H)]`` and, for comparison, of the variational band energy
``Tr[P H]`` (stationary in P: only the first-order term ``Tr[P dH]`` survives).

    python benchmarks/energy_sensitivity.py --data data/water_pbe_def2svp.h5

Writes ``benchmarks/results/energy_sensitivity.json``.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import scipy.linalg
from ase.units import Hartree

from ase_phisnet.data.dataset import HamiltonianDataset


def electronic_energies(hamiltonian, overlap, core_hamiltonian, n_occupied):
    """``(1/2 Tr[P (H_core + H)], Tr[P H])`` in Eh for a closed shell."""
    _, orbitals = scipy.linalg.eigh(hamiltonian, overlap)
    density = 2 * orbitals[:, :n_occupied] @ orbitals[:, :n_occupied].T
    return 0.5 * np.sum(density * (core_hamiltonian + hamiltonian)), np.sum(density * hamiltonian)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/water_pbe_def2svp.h5")
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--noise-ueh", type=float, nargs="+", default=[10, 30, 170, 1000])
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    dataset = HamiltonianDataset(args.data)
    rng = np.random.default_rng(0)
    rows = []
    for noise_ueh in args.noise_ueh:
        phisnet, variational = [], []
        for index in range(args.n):
            record = dataset[index]
            n_occupied = int(np.sum(record.occupations > 0))
            noise = rng.normal(scale=noise_ueh * 1e-6, size=record.hamiltonian_eh.shape)
            noise = (noise + noise.T) / np.sqrt(2)
            exact = electronic_energies(record.hamiltonian_eh, record.overlap,
                                        record.core_hamiltonian_eh, n_occupied)
            noisy = electronic_energies(record.hamiltonian_eh + noise, record.overlap,
                                        record.core_hamiltonian_eh, n_occupied)
            phisnet.append(noisy[0] - exact[0])
            variational.append(noisy[1] - exact[1])
        rows.append({"h_noise_ueh": noise_ueh,
                     "phisnet_energy_error_mev": 1000 * Hartree * float(np.abs(phisnet).mean()),
                     "band_energy_error_mev": 1000 * Hartree * float(np.abs(variational).mean())})
        print(f"H noise {noise_ueh:6.0f} µEh: 1/2 Tr[P(Hcore+H)] changes by "
              f"{rows[-1]['phisnet_energy_error_mev']:7.1f} meV, Tr[PH] by "
              f"{rows[-1]['band_energy_error_mev']:7.1f} meV (mean over {args.n} geometries)")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "energy_sensitivity.json"), "w") as handle:
        json.dump({"dataset": os.path.basename(args.data), "n_geometries": args.n,
                   "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
