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

import os
import tempfile

import _common  # md_examples/_common.py: shared options, BFGS, frequency plot, results file
import numpy as np
from ase import Atoms, units
from ase.vibrations import Vibrations, VibrationsData
from phonopy import Phonopy
from phonopy.structure.atoms import PhonopyAtoms

from ase_phisnet import PhiSNetCalculator
from ase_phisnet.data.sampling import resolve_molecule
from ase_phisnet.interface.potentials import default_potential

#: 1 THz in cm^-1: 1e12 Hz / (c in cm/s).
CM_PER_THZ = 1e12 / (units._c * 100.0)


def parse_args(argv=None):
    parser = _common.argument_parser(__doc__)
    _common.add_bfgs_arguments(parser, fmax=0.001, before="the vibrations")
    parser.add_argument("--delta-ang", type=float, default=0.01,
                        help="displacement of phonopy and of ASE's finite differences (Å)")
    parser.add_argument("--box-ang", type=float, default=20.0, help="cubic box edge (Å)")
    return _common.parse_args(parser, argv, __file__)


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


def main(argv=None) -> dict:
    args = parse_args(argv)
    atoms = resolve_molecule(args.molecule)
    model = args.model or default_potential(atoms)
    calculator = PhiSNetCalculator(model=model)
    bfgs = _common.relax(atoms, calculator, args.fmax, args.max_steps)
    n_vibrations = 3 * len(atoms) - 6  # nonlinear molecules

    all_phonopy, n_displaced_cells = phonopy_gamma_frequencies_cm(
        atoms, calculator, args.box_ang, args.delta_ang)
    with tempfile.TemporaryDirectory() as cache:  # ASE caches displaced forces on disk
        finite_differences = Vibrations(atoms, name=os.path.join(cache, "vib"),
                                        delta=args.delta_ang, nfree=2)
        finite_differences.run()
        all_ase = _common.frequencies_cm(finite_differences.get_vibrations())
    all_analytic = _common.frequencies_cm(VibrationsData.from_2d(atoms,
                                                                 calculator.get_hessian(atoms)))
    frequencies = {"ASE finite differences": all_ase[-n_vibrations:],
                   "phonopy": all_phonopy[-n_vibrations:],
                   "analytic Hessian": all_analytic[-n_vibrations:]}
    pairs = [("ASE finite differences", "phonopy"), ("phonopy", "analytic Hessian"),
             ("ASE finite differences", "analytic Hessian")]
    differences = {f"{a} vs {b}": float(np.mean(np.abs(frequencies[a] - frequencies[b])))
                   for a, b in pairs}

    print(f"{atoms.get_chemical_formula()} with {model}: BFGS {bfgs['steps']} steps "
          f"(converged {bfgs['converged']}); phonopy evaluated {n_displaced_cells} displaced cells")
    names = list(frequencies)
    print(f"{'mode':>4}" + "".join(f"{name:>24}" for name in names) + "  (cm^-1)")
    for mode in range(n_vibrations):
        print(f"{mode + 1:4d}" + "".join(f"{frequencies[name][mode]:24.2f}" for name in names))
    for label, value in differences.items():
        print(f"mean |difference| {label}: {value:.3f} cm^-1")
    print("six lowest (translations and rotations) phonopy / ASE: "
          + ", ".join(f"{p:.1f}/{a:.1f}" for p, a in zip(all_phonopy[:6], all_ase[:6])) + " cm^-1")

    _common.plot_frequencies(frequencies, args.out / "frequencies.png",
                             f"{atoms.get_chemical_formula()}: phonopy vs ASE, {model}")
    results = {
        "molecule": args.molecule, "model": model,
        "settings": _common.settings(args),
        "bfgs_steps": bfgs["steps"], "bfgs_converged": bfgs["converged"],
        "phonopy_displaced_cells": n_displaced_cells,
        "frequencies_cm": {name: values.tolist() for name, values in frequencies.items()},
        "lowest_six_cm": {"phonopy": all_phonopy[:6].tolist(), "ASE": all_ase[:6].tolist(),
                          "analytic Hessian": all_analytic[:6].tolist()},
        "mean_abs_difference_cm": differences,
    }
    _common.write_results(results, args.out)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    _common.run(main)
