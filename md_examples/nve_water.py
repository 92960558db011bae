"""NVE water: does the PhiSNet potential conserve the total energy over 10 ps?

Velocity Verlet (0.5 fs) from Maxwell–Boltzmann velocities at 300 K, through
``ase_phisnet.interface.md.run_md``. Prints the total-energy drift (slope of a line fitted to
E_tot(t), in eV/atom/ps) and fluctuation (standard deviation about that line, eV/atom), and saves

    energy_conservation.png   E_tot - E_tot(0) per atom against time, with the fitted line
    md_overview.png           energies, temperature and HOMO–LUMO gap
                              (ase_phisnet.interface.md.plot_log)
    nve.traj, nve.log         ASE trajectory and per-step log (every --log-interval steps)
    results.json              settings and the numbers printed

Run (about 18 min on one thread of a 2-core CPU beside other jobs with the defaults: ~19 steps/s):

    python md_examples/nve_water.py
    python md_examples/nve_water.py --steps 2000 --out /tmp/nve   # 1 ps
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import _common  # md_examples/_common.py: shared options, results file
import matplotlib.pyplot as plt
import numpy as np

from ase_phisnet import PhiSNetCalculator
from ase_phisnet.data.sampling import resolve_molecule
from ase_phisnet.interface.md import MDSettings, plot_log, run_md
from ase_phisnet.interface.potentials import default_potential


def parse_args(argv=None):
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--steps", type=int, default=20000, help="MD steps (default 20000 = 10 ps)")
    parser.add_argument("--timestep-fs", type=float, default=0.5)
    parser.add_argument("--temperature-k", type=float, default=300.0,
                        help="temperature of the initial velocities (K)")
    parser.add_argument("--log-interval", type=int, default=10,
                        help="steps between log rows and trajectory frames")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial velocities")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return _common.parse_args(parser, argv, __file__)


def plot_energy_conservation(log: np.ndarray, n_atoms: int, drift_ev_per_atom_per_ps: float,
                             path: Path, title: str) -> None:
    """E_tot - E_tot(0) per atom (meV/atom) against time, with the fitted drift line."""
    time_ps = log[:, 1] / 1000.0
    total_mev_per_atom = (log[:, 4] - log[0, 4]) / n_atoms * 1000.0
    intercept = np.mean(total_mev_per_atom - drift_ev_per_atom_per_ps * 1000.0 * time_ps)
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot(time_ps, total_mev_per_atom, lw=0.8, label="total energy")
    axes.plot(time_ps, intercept + drift_ev_per_atom_per_ps * 1000.0 * time_ps, "k--",
              label=f"drift {drift_ev_per_atom_per_ps:.2e} eV/atom/ps")
    axes.set_xlabel("time (ps)")
    axes.set_ylabel("E_tot - E_tot(0) (meV/atom)")
    axes.legend()
    axes.set_title(title)
    _common.save_figure(figure, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    atoms = resolve_molecule(args.molecule)
    model = args.model or default_potential(atoms)
    atoms.calc = PhiSNetCalculator(model=model)
    settings = MDSettings(ensemble="nve", temperature_k=args.temperature_k,
                          timestep_fs=args.timestep_fs, steps=args.steps,
                          log_interval=args.log_interval, seed=args.seed)
    summary, log = run_md(atoms, settings, trajectory_path=args.out / "nve.traj",
                          log_path=args.out / "nve.log", progress=not args.no_progress)
    print(summary.text())

    title = f"NVE {atoms.get_chemical_formula()}, {model}, {args.timestep_fs} fs"
    plot_energy_conservation(log, len(atoms), summary.energy_drift_ev_per_atom_per_ps,
                             args.out / "energy_conservation.png", title)
    plot_log(log, args.out / "md_overview.png", title=title)
    results = {"molecule": args.molecule, "model": model, "settings": asdict(settings),
               **summary.to_dict(),
               "total_energy_range_ev_per_atom": float(np.ptp(log[:, 4]) / len(atoms))}
    _common.write_results(results, args.out)
    print(f"total-energy range {results['total_energy_range_ev_per_atom']:.2e} eV/atom; "
          f"wrote {args.out}")
    return results


if __name__ == "__main__":
    _common.run(main)
