"""Energy conservation of NVE (velocity Verlet) with a PhiSNet model.

    python benchmarks/nve_drift.py MODEL [--molecule H2O] [--temperature 300] [--timestep 0.5]
        [--steps 2000] [--out benchmarks/results]

Reports the linear drift of the total energy per atom per ps and its fluctuation, and saves
``nve_<molecule>.json`` and ``nve_<molecule>.png`` (total, potential and kinetic energy).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from ase.build import molecule
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet
from ase.units import fs

from ase_phisnet.calculator import PhiSNetCalculator


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--molecule", default="H2O")
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    atoms = molecule(args.molecule)
    atoms.calc = PhiSNetCalculator(model=args.model)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature,
                                 rng=np.random.default_rng(args.seed))
    Stationary(atoms)
    ZeroRotation(atoms)
    dynamics = VelocityVerlet(atoms, timestep=args.timestep * fs)
    rows = []
    dynamics.attach(lambda: rows.append((atoms.get_potential_energy(),
                                         atoms.get_kinetic_energy())), interval=1)
    start = time.perf_counter()
    dynamics.run(args.steps)
    wall = time.perf_counter() - start
    potential, kinetic = np.array(rows).T
    total = potential + kinetic
    times_ps = np.arange(len(total)) * args.timestep / 1000
    drift = np.polyfit(times_ps, total, 1)[0] / len(atoms)
    result = {"model": args.model, "molecule": args.molecule, "timestep_fs": args.timestep,
              "steps": args.steps, "drift_ev_per_atom_per_ps": drift,
              "total_energy_std_ev_per_atom": total.std() / len(atoms),
              "mean_temperature_k": float(np.mean(kinetic) / (1.5 * len(atoms) * 8.617333e-5)),
              "steps_per_second": args.steps / wall}
    print(json.dumps(result, indent=2))
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"nve_{args.molecule}")
    with open(stem + ".json", "w") as handle:
        json.dump(result, handle, indent=2)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(times_ps, potential - potential[0], label="potential")
    axis.plot(times_ps, kinetic - kinetic[0], label="kinetic")
    axis.plot(times_ps, total - total[0], "k", label="total")
    axis.set_xlabel("time (ps)")
    axis.set_ylabel("energy change (eV)")
    axis.set_title(f"NVE {args.molecule}: drift {drift:.2e} eV/atom/ps")
    axis.legend()
    figure.tight_layout()
    figure.savefig(stem + ".png", dpi=120)


if __name__ == "__main__":
    main()
