"""Geometry optimization: BFGS with the PhiSNet potential next to BFGS with PySCF PBE/def2-SVP.

Both start from the same distorted geometry (the ASE structure plus a seeded Gaussian random
displacement of every coordinate) and run ``ase.optimize.BFGS`` to ``--fmax`` (eV/Å). Prints a
table of the converged bond lengths (every pair bonded by ASE's natural cutoffs in the
undistorted structure, Å) and bond angles (degrees) of both methods and their differences, and
the RMSD between the two minima after optimal superposition. Saves

    bfgs_convergence.png       largest force and energy against BFGS step, both methods
    geometry_differences.png   PhiSNet - PySCF for every bond (mÅ) and angle (degrees)
    results.json               settings, optimizer statistics, the table

Run (about 12 s for water with the defaults, most of it PySCF; ethanol takes minutes):

    python md_examples/optimize.py
    python md_examples/optimize.py --molecule CH3CH2OH
    python md_examples/optimize.py --no-pyscf --distortion-ang 0.05     # PhiSNet only
"""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import _common  # md_examples/_common.py: shared options, BFGS, results file
import matplotlib.pyplot as plt
import numpy as np
from ase.build import minimize_rotation_and_translation
from ase.neighborlist import NeighborList, natural_cutoffs

from ase_phisnet import PhiSNetCalculator
from ase_phisnet.data.sampling import resolve_molecule
from ase_phisnet.interface.potentials import default_potential


def parse_args(argv=None):
    parser = _common.argument_parser(__doc__)
    parser.add_argument("--distortion-ang", type=float, default=0.1,
                        help="standard deviation of the random start displacement (Å)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random displacement")
    _common.add_bfgs_arguments(parser, fmax=0.01)
    parser.add_argument("--xc", default="pbe", help="PySCF functional of the reference")
    parser.add_argument("--basis", default="def2-svp", help="PySCF basis of the reference")
    parser.add_argument("--no-pyscf", action="store_true", help="skip the PySCF optimization")
    return _common.parse_args(parser, argv, __file__)


def bonds_and_angles(atoms) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]]]:
    """Bonded pairs ``(i, j)`` (ASE natural cutoffs) and angles ``(i, centre, k)`` between them."""
    neighbors = NeighborList(natural_cutoffs(atoms), self_interaction=False, bothways=True)
    neighbors.update(atoms)
    bonds, angles = [], []
    for centre in range(len(atoms)):
        bonded = sorted(int(j) for j in neighbors.get_neighbors(centre)[0])
        bonds += [(centre, j) for j in bonded if centre < j]
        angles += [(i, centre, k) for i, k in itertools.combinations(bonded, 2)]
    return bonds, angles


def geometry_table(results_by_method: dict, atoms, bonds, angles) -> list[dict]:
    """One row per bond (Å) and angle (degrees) with each method's value."""
    symbols = atoms.get_chemical_symbols()

    def label(*indices):
        return "-".join(f"{symbols[i]}{i}" for i in indices)

    rows = []
    for i, j in bonds:
        rows.append({"kind": "bond", "atoms": label(i, j), "unit": "Å",
                     **{name: float(a.get_distance(i, j))
                        for name, a in results_by_method.items()}})
    for i, centre, k in angles:
        rows.append({"kind": "angle", "atoms": label(i, centre, k), "unit": "deg",
                     **{name: float(a.get_angle(i, centre, k))
                        for name, a in results_by_method.items()}})
    return rows


def print_table(rows: list[dict], methods: list[str]) -> None:
    header = f"{'':6} {'atoms':<12}" + "".join(f"{m:>10}" for m in methods)
    if len(methods) == 2:
        header += f"{'diff':>10}"
    print(header)
    for row in rows:
        form = "{:10.4f}" if row["kind"] == "bond" else "{:10.2f}"
        line = f"{row['kind']:6} {row['atoms']:<12}" + "".join(form.format(row[m]) for m in methods)
        if len(methods) == 2:
            line += form.format(row["difference"])
        print(line + f"  {row['unit']}")


def plot_convergence(runs: dict, fmax: float, path: Path) -> None:
    figure, (force_axes, energy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for name, run in runs.items():
        force_axes.semilogy(run["fmax_ev_per_ang"], "o-", ms=3, label=name)
        energy = np.array(run["energy_ev"])
        # The last point is zero by definition; 1e-10 eV floors BFGS's last tiny steps.
        energy_axes.semilogy(np.maximum(energy[:-1] - energy[-1], 1e-10), "o-", ms=3, label=name)
    force_axes.axhline(fmax, color="k", ls="--", lw=0.8, label="fmax")
    force_axes.set_xlabel("BFGS step")
    force_axes.set_ylabel("largest force (eV/Å)")
    force_axes.legend()
    energy_axes.set_xlabel("BFGS step")
    energy_axes.set_ylabel("E - E_final (eV)")
    energy_axes.legend()
    _common.save_figure(figure, path)


def plot_differences(rows: list[dict], path: Path) -> None:
    bonds = [row for row in rows if row["kind"] == "bond"]
    angles = [row for row in rows if row["kind"] == "angle"]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), squeeze=False)
    for ax, group, scale, unit in ((axes[0, 0], bonds, 1000.0, "mÅ"),
                                   (axes[0, 1], angles, 1.0, "degrees")):
        ax.bar(range(len(group)), [row["difference"] * scale for row in group])
        ax.set_xticks(range(len(group)), [row["atoms"] for row in group], rotation=60,
                      fontsize=8)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylabel(f"PhiSNet - PySCF ({unit})")
    axes[0, 0].set_title("bond lengths")
    axes[0, 1].set_title("bond angles")
    _common.save_figure(figure, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    reference = resolve_molecule(args.molecule)
    model = args.model or default_potential(reference)
    bonds, angles = bonds_and_angles(reference)
    start = reference.copy()
    rng = np.random.default_rng(args.seed)
    start.positions += rng.normal(scale=args.distortion_ang, size=start.positions.shape)

    calculators = {"PhiSNet": PhiSNetCalculator(model=model)}
    if not args.no_pyscf:
        from ase_phisnet.data.pyscf_calculator import PySCFCalculator
        from ase_phisnet.data.reference import Theory

        calculators["PySCF"] = PySCFCalculator(Theory(xc=args.xc, basis=args.basis))
    minima, runs = {}, {}
    for name, calculator in calculators.items():
        atoms = start.copy()
        runs[name] = _common.relax(atoms, calculator, args.fmax, args.max_steps, history=True)
        minima[name] = atoms
        print(f"{name}: {runs[name]['steps']} BFGS steps, converged {runs[name]['converged']}, "
              f"{runs[name]['wall_time_s']:.1f} s, E = {runs[name]['energy_ev'][-1]:.6f} eV")

    rows = geometry_table(minima, reference, bonds, angles)
    results = {"molecule": args.molecule, "model": model, "settings": _common.settings(args),
               "optimizations": runs}
    if "PySCF" in minima:
        for row in rows:
            row["difference"] = row["PhiSNet"] - row["PySCF"]
        aligned = minima["PhiSNet"].copy()
        minimize_rotation_and_translation(minima["PySCF"], aligned)
        rmsd = float(np.sqrt(np.mean(np.sum((aligned.positions - minima["PySCF"].positions) ** 2,
                                            axis=1))))
        bond_differences = [abs(r["difference"]) for r in rows if r["kind"] == "bond"]
        angle_differences = [abs(r["difference"]) for r in rows if r["kind"] == "angle"]
        results.update({
            "rmsd_ang": rmsd,
            "bond_mean_abs_difference_ang": float(np.mean(bond_differences)),
            "angle_mean_abs_difference_deg": (float(np.mean(angle_differences))
                                              if angle_differences else None)})
        plot_differences(rows, args.out / "geometry_differences.png")
    results["geometry"] = rows
    print_table(rows, list(minima))
    if "rmsd_ang" in results:
        print(f"RMSD after superposition {results['rmsd_ang']:.4f} Å; mean |bond difference| "
              f"{results['bond_mean_abs_difference_ang']:.4f} Å")
    plot_convergence(runs, args.fmax, args.out / "bfgs_convergence.png")
    _common.write_results(results, args.out)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    _common.run(main)
