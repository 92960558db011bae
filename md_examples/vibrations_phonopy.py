"""Vibrations with phonopy: the molecule in a large box, phonopy's displacements evaluated with the
PhiSNet calculator, Gamma-point frequencies compared with ASE's finite differences and the
analytic Hessian.

The BFGS-optimized molecule is centred in a cubic box (``--box-ang``) that only serves phonopy's
bookkeeping: phonopy (supercell 1x1x1, ``--delta-ang``, plus and minus displacements) makes the
displaced cells, each is evaluated as a *non-periodic* ``Atoms`` (PhiSNetCalculator treats
isolated molecules and rejects ``pbc=True``), and phonopy builds the force constants from those
forces. Its Gamma-point frequencies (THz) are converted to cm^-1 with ``ase.units``; the 3N-6
largest are compared with ``ase.vibrations.Vibrations`` (same displacement) and with
``calc.get_hessian`` through ``ase.vibrations.VibrationsData``. All three use the same potential
and ASE's atomic masses, so they must agree to a few cm^-1. Saves

    frequencies.png   frequencies of the three methods per mode, and their differences
    results.json      settings, frequencies (cm^-1), mean absolute differences

Run (seconds for water with the defaults):

    python md_examples/vibrations_phonopy.py
    python md_examples/vibrations_phonopy.py --molecule CH3CH2OH
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.calculator import CalculatorSetupError
from ase.io import read
from ase.optimize import BFGS
from ase.vibrations import Vibrations, VibrationsData
from phonopy import Phonopy
from phonopy.structure.atoms import PhonopyAtoms

from ase_phisnet import PhiSNetCalculator

SCRIPT = Path(__file__).resolve()
#: Shipped potential used when --model is not given, by molecule name.
DEFAULT_MODELS = {"H2O": "water-pbe-def2svp", "CH3CH2OH": "ethanol-pbe-def2svp"}
#: 1 THz in cm^-1: 1e12 Hz / (c in cm/s).
CM_PER_THZ = 1e12 / (units._c * 100.0)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--molecule", default="H2O", help="ASE molecule name or structure file")
    parser.add_argument("--model", default=None,
                        help="shipped potential name or model file (default: the shipped "
                        "potential of --molecule)")
    parser.add_argument("--fmax", type=float, default=0.001,
                        help="BFGS force threshold before the vibrations (eV/Å)")
    parser.add_argument("--max-steps", type=int, default=300, help="BFGS step limit")
    parser.add_argument("--delta-ang", type=float, default=0.01,
                        help="displacement of phonopy and of ASE's finite differences (Å)")
    parser.add_argument("--box-ang", type=float, default=20.0, help="cubic box edge (Å)")
    parser.add_argument("--out", type=Path, default=SCRIPT.parent / "results" / SCRIPT.stem,
                        help="output folder")
    return parser.parse_args(argv)


def load_molecule(name_or_path: str):
    """An ASE ``Atoms`` from a g2 name (``H2O``) or a structure file, non-periodic."""
    atoms = read(name_or_path) if os.path.exists(name_or_path) else molecule(name_or_path)
    atoms.pbc = False
    return atoms


def model_for(args) -> str:
    if args.model is not None:
        return args.model
    if args.molecule not in DEFAULT_MODELS:
        raise SystemExit(f"no default potential for {args.molecule!r}: pass --model")
    return DEFAULT_MODELS[args.molecule]


def phonopy_gamma_frequencies_cm(atoms, calculator, box_ang: float, delta_ang: float):
    """Gamma-point frequencies (cm^-1, ascending, imaginary as negative) of ``atoms`` centred in a
    cubic box, from phonopy's displacements; also returns the number of displaced cells."""
    boxed = atoms.copy()
    boxed.cell = [box_ang] * 3
    boxed.center()
    unit_cell = PhonopyAtoms(symbols=boxed.get_chemical_symbols(), cell=boxed.cell[:],
                             positions=boxed.positions, masses=boxed.get_masses())
    phonon = Phonopy(unit_cell, supercell_matrix=np.eye(3, dtype=int), primitive_matrix=None)
    phonon.generate_displacements(distance=delta_ang, is_plusminus=True)
    forces = []
    for displaced in phonon.supercells_with_displacements:
        if np.abs(displaced.positions - boxed.positions).max() > 10 * delta_ang:
            raise RuntimeError("an atom was wrapped across the box: make --box-ang larger")
        # The box is phonopy's bookkeeping only: the molecule itself is isolated.
        molecule_atoms = Atoms(displaced.symbols, positions=displaced.positions, pbc=False)
        molecule_atoms.calc = calculator
        forces.append(molecule_atoms.get_forces())
    phonon.forces = np.array(forces)
    phonon.produce_force_constants()
    phonon.run_qpoints([[0.0, 0.0, 0.0]])
    frequencies_thz = phonon.qpoints.frequencies[0]
    return np.sort(frequencies_thz) * CM_PER_THZ, len(forces)


def ase_frequencies_cm(data: VibrationsData) -> np.ndarray:
    """All 3N frequencies (cm^-1, ascending), an imaginary one as a negative number."""
    frequencies = data.get_frequencies()
    return np.where(frequencies.imag != 0, -np.abs(frequencies.imag), frequencies.real)


def plot_frequencies(frequencies: dict, path: Path, title: str) -> None:
    """Top: frequency per mode for each method; bottom: differences to the analytic Hessian."""
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    modes = np.arange(1, len(frequencies["analytic Hessian"]) + 1)
    styles = {name: (f"C{i}", marker) for i, (name, marker) in enumerate(zip(frequencies, "os^"))}
    for name, values in frequencies.items():
        color, marker = styles[name]
        top.plot(modes, values, marker, color=color, mfc="none", label=name)
        if name != "analytic Hessian":
            bottom.plot(modes, np.asarray(values) - frequencies["analytic Hessian"],
                        marker + "-", color=color, mfc="none", label=f"{name} - analytic")
    top.set_ylabel("frequency (cm$^{-1}$)")
    top.legend()
    top.set_title(title)
    bottom.axhline(0, color="k", lw=0.8)
    bottom.set_xticks(modes)
    bottom.set_xlabel("mode")
    bottom.set_ylabel("difference (cm$^{-1}$)")
    bottom.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model = model_for(args)
    atoms = load_molecule(args.molecule)
    calculator = PhiSNetCalculator(model=model)
    atoms.calc = calculator
    optimizer = BFGS(atoms, logfile=None)
    converged = bool(optimizer.run(fmax=args.fmax, steps=args.max_steps))
    n_vibrations = 3 * len(atoms) - 6  # nonlinear molecules

    all_phonopy, n_displaced_cells = phonopy_gamma_frequencies_cm(
        atoms, calculator, args.box_ang, args.delta_ang)
    with tempfile.TemporaryDirectory() as cache:  # ASE caches displaced forces on disk
        finite_differences = Vibrations(atoms, name=os.path.join(cache, "vib"),
                                        delta=args.delta_ang, nfree=2)
        finite_differences.run()
        all_ase = ase_frequencies_cm(finite_differences.get_vibrations())
    all_analytic = ase_frequencies_cm(VibrationsData.from_2d(atoms,
                                                             calculator.get_hessian(atoms)))
    frequencies = {"ASE finite differences": all_ase[-n_vibrations:],
                   "phonopy": all_phonopy[-n_vibrations:],
                   "analytic Hessian": all_analytic[-n_vibrations:]}
    pairs = [("ASE finite differences", "phonopy"), ("phonopy", "analytic Hessian"),
             ("ASE finite differences", "analytic Hessian")]
    differences = {f"{a} vs {b}": float(np.mean(np.abs(frequencies[a] - frequencies[b])))
                   for a, b in pairs}

    print(f"{atoms.get_chemical_formula()} with {model}: BFGS {optimizer.nsteps} steps "
          f"(converged {converged}); phonopy evaluated {n_displaced_cells} displaced cells")
    names = list(frequencies)
    print(f"{'mode':>4}" + "".join(f"{name:>24}" for name in names) + "  (cm^-1)")
    for mode in range(n_vibrations):
        print(f"{mode + 1:4d}" + "".join(f"{frequencies[name][mode]:24.2f}" for name in names))
    for label, value in differences.items():
        print(f"mean |difference| {label}: {value:.3f} cm^-1")
    print("six lowest (translations and rotations) phonopy / ASE: "
          + ", ".join(f"{p:.1f}/{a:.1f}" for p, a in zip(all_phonopy[:6], all_ase[:6])) + " cm^-1")

    plot_frequencies(frequencies, args.out / "frequencies.png",
                     f"{atoms.get_chemical_formula()}: phonopy vs ASE, {model}")
    results = {
        "molecule": args.molecule, "model": model,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "bfgs_steps": optimizer.nsteps, "bfgs_converged": converged,
        "phonopy_displaced_cells": n_displaced_cells,
        "frequencies_cm": {name: values.tolist() for name, values in frequencies.items()},
        "lowest_six_cm": {"phonopy": all_phonopy[:6].tolist(), "ASE": all_ase[:6].tolist(),
                          "analytic Hessian": all_analytic[:6].tolist()},
        "mean_abs_difference_cm": differences,
    }
    with open(args.out / "results.json", "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    try:
        main()
    except CalculatorSetupError as error:
        sys.exit(f"error: {error}")
