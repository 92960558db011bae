"""NVT ethanol: temperature, energy, HOMO–LUMO gap and the Mulliken charge of O along a
Langevin trajectory at 300 K.

Langevin dynamics (0.5 fs, friction 0.01/fs, centre of mass fixed) from Maxwell–Boltzmann
velocities, through ``ase_phisnet.interface.md.run_md``; the oxygen Mulliken charges come from
``calc.get_charges()``, stored in every trajectory frame. Prints means and spreads, and saves

    nvt_observables.png   temperature, E_pot, HOMO–LUMO gap and the O charge(s) against time
    nvt.traj, nvt.log     ASE trajectory and per-step log (every --log-interval steps)
    results.json          settings and the numbers printed

Whether the run stayed inside the potential's data is read off every saved frame: how far
(Å) its farthest-out distance lies outside its training range (an element pair's, e.g.
``H-O``, or where the model file records them an element's k-th nearest-neighbour range,
e.g. ``H:1``; ``largest_excursion_pair`` names it), and how many frames leave it.

Run (2 ps with the shipped ethanol-pbe-def2svp, ~5 min on one CPU thread beside other jobs:
~14 steps/s):

    python md_examples/nvt_ethanol.py
    python md_examples/nvt_ethanol.py --molecule H2O --model water-pbe-def2svp

The reported temperature is 2 E_kin / ((3N - 3) k_B): the centre of mass is fixed, so the thermostat
acts on 3N - 3 degrees of freedom and the mean settles at its T (ase_phisnet.interface.md).
"""

from __future__ import annotations

from dataclasses import asdict

import matplotlib

matplotlib.use("Agg")
import _common  # md_examples/_common.py: shared options, results file
import matplotlib.pyplot as plt
import numpy as np
from ase.io import read

from ase_phisnet import PhiSNetCalculator
from ase_phisnet.data.sampling import resolve_molecule
from ase_phisnet.interface.md import MDSettings, run_md
from ase_phisnet.interface.potentials import default_potential


def parse_args(argv=None):
    parser = _common.argument_parser(__doc__, molecule="CH3CH2OH")
    parser.add_argument("--steps", type=int, default=4000, help="MD steps (default 4000 = 2 ps)")
    parser.add_argument("--timestep-fs", type=float, default=0.5)
    parser.add_argument("--temperature-k", type=float, default=300.0,
                        help="thermostat and initial-velocity temperature (K)")
    parser.add_argument("--friction-per-fs", type=float, default=0.01, help="Langevin friction")
    parser.add_argument("--log-interval", type=int, default=5,
                        help="steps between log rows and trajectory frames")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initial velocities and the thermostat noise")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return _common.parse_args(parser, argv, __file__)


def plot_observables(time_ps, log, oxygen_charges, oxygen_indices, target_k, path, title):
    """Four stacked panels against time (ps): T (K), E_pot (eV), gap (eV), q(O) (e)."""
    figure, axes = plt.subplots(4, 1, figsize=(7, 9), sharex=True)
    axes[0].plot(time_ps, log[:, 5], lw=0.8)
    axes[0].axhline(target_k, color="k", ls="--", lw=0.8, label=f"thermostat {target_k:g} K")
    axes[0].set_ylabel("T (K)")
    axes[0].legend()
    axes[1].plot(time_ps, log[:, 2] - log[:, 2].min(), lw=0.8)
    axes[1].set_ylabel("E_pot - min (eV)")
    axes[2].plot(time_ps, log[:, 6], lw=0.8)
    axes[2].set_ylabel("HOMO-LUMO gap (eV)")
    for column, index in enumerate(oxygen_indices):
        axes[3].plot(time_ps, oxygen_charges[:, column], lw=0.8, label=f"O (atom {index})")
    axes[3].set_ylabel("Mulliken charge (e)")
    axes[3].set_xlabel("time (ps)")
    axes[3].legend()
    axes[0].set_title(title)
    _common.save_figure(figure, path)


def mean_and_std(values) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def main(argv=None) -> dict:
    args = parse_args(argv)
    atoms = resolve_molecule(args.molecule)
    model = args.model or default_potential(atoms)
    atoms.calc = PhiSNetCalculator(model=model)
    settings = MDSettings(ensemble="nvt", temperature_k=args.temperature_k,
                          timestep_fs=args.timestep_fs, steps=args.steps,
                          friction_per_fs=args.friction_per_fs,
                          log_interval=args.log_interval, seed=args.seed)
    trajectory_path = args.out / "nvt.traj"
    summary, log = run_md(atoms, settings, trajectory_path=trajectory_path,
                          log_path=args.out / "nvt.log", progress=not args.no_progress)

    # Every frame was written right after the calculator ran on it: its charges are stored.
    frames = read(trajectory_path, ":")
    oxygen_indices = [atom.index for atom in atoms if atom.symbol == "O"]
    oxygen_charges = np.array([frame.get_charges()[oxygen_indices] for frame in frames])
    time_ps = log[:, 1] / 1000.0
    domain = atoms.calc.training_domain  # None for a model file that records none
    excursions = ([domain.excursion_ang(frame.numbers, frame.positions) for frame in frames]
                  if domain is not None else [(float("nan"), "")])
    worst = max(excursions, key=lambda item: item[0])

    results = {
        "molecule": args.molecule, "model": model, "settings": asdict(settings),
        **summary.to_dict(),
        "temperature_k": mean_and_std(log[:, 5]),
        "potential_energy_ev": mean_and_std(log[:, 2]),
        "homo_lumo_gap_ev": mean_and_std(log[:, 6]),
        "training_domain": None if domain is None else {
            "frames": len(frames), "frames_outside": sum(excess > 0 for excess, _ in excursions),
            "largest_excursion_ang": worst[0], "largest_excursion_pair": worst[1]},
        "oxygen_mulliken_charge_e": {str(index): mean_and_std(oxygen_charges[:, column])
                                     for column, index in enumerate(oxygen_indices)},
    }
    print(f"NVT: {summary.steps} steps, {summary.simulated_ps:.3f} ps of {summary.n_atoms} atoms "
          f"in {summary.wall_time_s:.1f} s ({summary.steps_per_s:.1f} steps/s)")
    print(f"temperature {results['temperature_k']['mean']:.1f} +- "
          f"{results['temperature_k']['std']:.1f} K; HOMO-LUMO gap "
          f"{results['homo_lumo_gap_ev']['mean']:.3f} +- {results['homo_lumo_gap_ev']['std']:.3f}"
          " eV")
    if domain is not None:
        print(f"frames outside the training data's distance ranges: "
              f"{results['training_domain']['frames_outside']} of {len(frames)}; largest "
              f"excursion {worst[0]:.3f} Å ({worst[1] or 'none'})")
    for index, charge in results["oxygen_mulliken_charge_e"].items():
        print(f"Mulliken charge of O (atom {index}): {charge['mean']:.3f} +- {charge['std']:.3f} e")

    title = (f"Langevin NVT {atoms.get_chemical_formula()}, {model}, "
             f"{args.temperature_k:g} K")
    plot_observables(time_ps, log, oxygen_charges, oxygen_indices, args.temperature_k,
                     args.out / "nvt_observables.png", title)
    _common.write_results(results, args.out)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    _common.run(main)
