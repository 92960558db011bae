"""Harmonic vibrations three ways: ASE finite differences and the analytic Hessian of the PhiSNet
potential, next to PySCF's analytic PBE/def2-SVP frequencies; ideal-gas Gibbs free energies.

Each method is first optimized with ``ase.optimize.BFGS`` to ``--fmax`` and its frequencies are
taken at its own minimum:

- ``ase.vibrations.Vibrations``: central finite differences of PhiSNet forces (``--delta-ang``);
- ``calc.get_hessian(atoms)``: PhiSNet's analytic Hessian (double backward), through
  ``ase.vibrations.VibrationsData.from_2d``;
- PySCF: RKS PBE/def2-SVP analytic Hessian (``mf.Hessian()``) and
  ``pyscf.hessian.thermo.harmonic_analysis``, at the geometry optimized with
  ``ase_phisnet.data.pyscf_calculator.PySCFCalculator``.

Finite differences and the analytic Hessian come from the same potential and must agree to a
few cm^-1; PhiSNet against PySCF measures the potential's accuracy. Imaginary frequencies are
written as negative numbers. Gibbs free energies from ``ase.thermochemistry.IdealGasThermo``
(rigid rotor, harmonic oscillator, spin 0) at ``--temperature-k`` and ``--pressure-pa``. Saves

    frequencies.png   frequencies of the three methods per mode, and their differences
    results.json      settings, frequencies (cm^-1), mean absolute differences, free energies
    pyscf_reference.json   PySCF's minimum and frequencies, reused by later runs of the same
                      molecule, theory and --fmax (--recompute-pyscf redoes them)

Run (about 10 s for water with the defaults: PySCF's minimum and Hessian are read from the
committed results/vibrations_ase/pyscf_reference.json; computing them takes 8 s for water and
about 7.5 min for ethanol on one thread, whose reference is committed in
results/vibrations_ase_ethanol/):

    python md_examples/vibrations_ase.py
    python md_examples/vibrations_ase.py --molecule CH3CH2OH \\
        --out md_examples/results/vibrations_ase_ethanol
    python md_examples/vibrations_ase.py --no-pyscf          # PhiSNet only, seconds
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import _common  # md_examples/_common.py: shared options, BFGS, frequency plot, results file
import numpy as np
from ase import Atoms, units
from ase.thermochemistry import IdealGasThermo
from ase.vibrations import Vibrations, VibrationsData

from ase_phisnet import PhiSNetCalculator
from ase_phisnet.data.sampling import resolve_molecule
from ase_phisnet.interface.potentials import default_potential

#: Rotational symmetry numbers for IdealGasThermo (C2v water 2, C1/Cs ethanol 1).
SYMMETRY_NUMBERS = {"H2O": 2, "CH3CH2OH": 1}


def parse_args(argv=None):
    parser = _common.argument_parser(__doc__)
    _common.add_bfgs_arguments(parser, fmax=0.001, before="the vibrations")
    parser.add_argument("--delta-ang", type=float, default=0.01,
                        help="finite-difference displacement (Å)")
    parser.add_argument("--temperature-k", type=float, default=298.15)
    parser.add_argument("--pressure-pa", type=float, default=101325.0)
    parser.add_argument("--symmetry-number", type=int, default=None,
                        help="rotational symmetry number (default: 2 for H2O, 1 for CH3CH2OH)")
    parser.add_argument("--xc", default="pbe", help="PySCF functional of the reference")
    parser.add_argument("--basis", default="def2-svp", help="PySCF basis of the reference")
    parser.add_argument("--no-pyscf", action="store_true", help="skip the PySCF reference")
    parser.add_argument("--recompute-pyscf", action="store_true",
                        help="ignore the PySCF reference kept in OUT/pyscf_reference.json")
    return _common.parse_args(parser, argv, __file__)


def relax(atoms, calculator, fmax: float, max_steps: int) -> dict:
    """BFGS of ``atoms`` in place; returns the number of steps, convergence, wall time and the
    final energy."""
    run = _common.relax(atoms, calculator, fmax, max_steps)
    return {**run, "energy_ev": float(atoms.get_potential_energy())}


def rotor_geometry(atoms) -> str:
    """``'monatomic'``, ``'linear'`` or ``'nonlinear'`` from the principal moments of inertia."""
    if len(atoms) == 1:
        return "monatomic"
    return "linear" if atoms.get_moments_of_inertia().min() < 1e-4 else "nonlinear"


def vibrational_frequencies_cm(data: VibrationsData, n_vibrations: int) -> np.ndarray:
    """The ``n_vibrations`` highest modes in cm^-1; an imaginary one as a negative number."""
    return _common.frequencies_cm(data)[-n_vibrations:]


def pyscf_harmonic_frequencies(atoms, xc: str, basis: str, grid_level: int,
                               conv_tol: float) -> np.ndarray:
    """PySCF's analytic restricted-closed-shell Hessian -> harmonic frequencies (cm^-1)."""
    from pyscf import dft, gto, scf
    from pyscf.hessian import thermo

    mol = gto.M(atom=list(zip(atoms.get_chemical_symbols(), atoms.positions.tolist())),
                basis=basis, unit="Angstrom", charge=0, spin=0, verbose=0)
    if xc == "hf":
        mean_field = scf.RHF(mol)
    else:
        mean_field = dft.RKS(mol, xc=xc)
        mean_field.grids.level = grid_level
    mean_field.conv_tol = conv_tol
    mean_field.kernel()
    hessian_eh_per_bohr2 = mean_field.Hessian().kernel()  # (N, N, 3, 3)
    analysis = thermo.harmonic_analysis(mol, hessian_eh_per_bohr2, imaginary_freq=False)
    return np.sort(np.asarray(analysis["freq_wavenumber"]))


def pyscf_reference(molecule: str, xc: str, basis: str, fmax: float, max_steps: int,
                    cache: Path, recompute: bool = False) -> dict:
    """PySCF's BFGS minimum and analytic harmonic frequencies of ``molecule``, kept in ``cache``
    (JSON) and reused while molecule, functional, basis and ``fmax`` are the same: for ethanol
    this is most of the run (minutes), and it does not depend on the potential."""
    from ase_phisnet.data.pyscf_calculator import PySCFCalculator
    from ase_phisnet.data.reference import Theory

    key = {"molecule": molecule, "xc": xc, "basis": basis, "fmax": fmax}
    if cache.exists() and not recompute:
        kept = json.loads(cache.read_text())
        if kept["key"] == key:
            print(f"PySCF reference reused from {cache} (--recompute-pyscf to redo it)")
            return kept
    theory = Theory(xc=xc, basis=basis)
    atoms = resolve_molecule(molecule)
    optimization = relax(atoms, PySCFCalculator(theory), fmax, max_steps)
    start = time.perf_counter()
    frequencies = pyscf_harmonic_frequencies(atoms, theory.xc, theory.basis, theory.grid_level,
                                             theory.conv_tol)
    reference = {"key": key, "numbers": atoms.numbers.tolist(),
                 "positions_ang": atoms.positions.tolist(), "optimization": optimization,
                 "frequencies_cm": frequencies.tolist(),
                 "hessian_s": time.perf_counter() - start}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(reference, indent=2))
    return reference


def gibbs_free_energy_ev(frequencies_cm, energy_ev, atoms, geometry, symmetry_number,
                         temperature_k, pressure_pa) -> float:
    """Ideal-gas G (eV): RRHO with the real frequencies (imaginary ones left out)."""
    vibrational_energies_ev = np.asarray([f for f in frequencies_cm if f > 0]) * units.invcm
    thermo = IdealGasThermo(vib_energies=vibrational_energies_ev, geometry=geometry,
                            potentialenergy=energy_ev, atoms=atoms,
                            symmetrynumber=symmetry_number, spin=0)
    return float(thermo.get_gibbs_energy(temperature=temperature_k, pressure=pressure_pa,
                                         verbose=False))


def mean_abs_difference(a, b) -> float:
    return float(np.mean(np.abs(np.asarray(a) - np.asarray(b))))


def main(argv=None) -> dict:
    args = parse_args(argv)
    symmetry_number = args.symmetry_number or SYMMETRY_NUMBERS.get(args.molecule)
    if symmetry_number is None:
        raise SystemExit(f"no symmetry number known for {args.molecule!r}: pass --symmetry-number")

    atoms = resolve_molecule(args.molecule)
    model = args.model or default_potential(atoms)
    geometry = rotor_geometry(atoms)
    n_vibrations = {"monatomic": 0, "linear": 3 * len(atoms) - 5,
                    "nonlinear": 3 * len(atoms) - 6}[geometry]
    calculator = PhiSNetCalculator(model=model)
    optimizations = {"PhiSNet": relax(atoms, calculator, args.fmax, args.max_steps)}

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:  # ASE caches displaced forces on disk
        finite_differences = Vibrations(atoms, name=os.path.join(cache, "vib"),
                                        delta=args.delta_ang, nfree=2)
        finite_differences.run()
        finite_difference_data = finite_differences.get_vibrations()
    timings = {"finite_differences_s": time.perf_counter() - start}
    start = time.perf_counter()
    analytic_data = VibrationsData.from_2d(atoms, calculator.get_hessian(atoms))
    timings["analytic_hessian_s"] = time.perf_counter() - start
    frequencies = {
        "finite differences": vibrational_frequencies_cm(finite_difference_data, n_vibrations),
        "analytic Hessian": vibrational_frequencies_cm(analytic_data, n_vibrations),
    }
    energies = {"PhiSNet": optimizations["PhiSNet"]["energy_ev"]}

    pyscf_name = f"PySCF {args.xc.upper()}/{args.basis}"
    if not args.no_pyscf:
        reference = pyscf_reference(args.molecule, args.xc, args.basis, args.fmax, args.max_steps,
                                    args.out / "pyscf_reference.json", args.recompute_pyscf)
        pyscf_atoms = Atoms(reference["numbers"], reference["positions_ang"])
        optimizations["PySCF"] = reference["optimization"]
        energies["PySCF"] = reference["optimization"]["energy_ev"]
        frequencies[pyscf_name] = np.asarray(reference["frequencies_cm"])
        timings["pyscf_hessian_s"] = reference["hessian_s"]

    names = list(frequencies)
    print(f"{atoms.get_chemical_formula()} with {model}: BFGS "
          + ", ".join(f"{k} {v['steps']} steps" for k, v in optimizations.items()))
    print(f"{'mode':>4}" + "".join(f"{name:>24}" for name in names) + "  (cm^-1)")
    for mode in range(n_vibrations):
        print(f"{mode + 1:4d}" + "".join(f"{frequencies[name][mode]:24.1f}" for name in names))
    differences = {"finite differences vs analytic Hessian": mean_abs_difference(
        frequencies["finite differences"], frequencies["analytic Hessian"])}
    if pyscf_name in frequencies:
        for ours in ("finite differences", "analytic Hessian"):
            differences[f"{ours} vs {pyscf_name}"] = mean_abs_difference(
                frequencies[ours], frequencies[pyscf_name])
    for label, value in differences.items():
        print(f"mean |difference| {label}: {value:.2f} cm^-1")

    # PhiSNet's free energy from its analytic-Hessian frequencies.
    free_energies = {"PhiSNet": gibbs_free_energy_ev(
        frequencies["analytic Hessian"], energies["PhiSNet"], atoms, geometry, symmetry_number,
        args.temperature_k, args.pressure_pa)}
    if "PySCF" in energies:
        free_energies["PySCF"] = gibbs_free_energy_ev(
            frequencies[pyscf_name], energies["PySCF"], pyscf_atoms, geometry, symmetry_number,
            args.temperature_k, args.pressure_pa)
    thermal_corrections = {name: g - energies[name] for name, g in free_energies.items()}
    for name, g in free_energies.items():
        print(f"G({args.temperature_k:g} K, {args.pressure_pa:g} Pa) {name}: {g:.4f} eV "
              f"(G - E_pot = {thermal_corrections[name]:.4f} eV)")

    _common.plot_frequencies(frequencies, args.out / "frequencies.png",
                             f"{atoms.get_chemical_formula()} harmonic frequencies, {model}")
    results = {
        "molecule": args.molecule, "model": model,
        "settings": _common.settings(args),
        "geometry": geometry, "symmetry_number": symmetry_number,
        "optimizations": optimizations, "timings_s": timings,
        "frequencies_cm": {name: np.asarray(values).tolist()
                           for name, values in frequencies.items()},
        "mean_abs_difference_cm": differences,
        "gibbs_free_energy_ev": free_energies,
        "gibbs_minus_potential_energy_ev": thermal_corrections,
    }
    _common.write_results(results, args.out)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    _common.run(main)
