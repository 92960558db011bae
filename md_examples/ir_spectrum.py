"""IR spectrum of the PhiSNet potential from dipole derivatives along the normal modes.

After a BFGS minimization, ``ase.vibrations.Infrared`` displaces every atom by +-``--delta-ang``
along x, y and z and takes central finite differences of the forces (Hessian -> normal modes)
and of the dipole moment that PhiSNetCalculator predicts from its density matrix (e·Å). The
intensity of a mode is |d mu / d Q|^2 in (D/Å)^2/amu, and x 42.255 in km/mol (ASE's factor).
Prints the table of the 3N-6 vibrational frequencies and intensities, and saves

    ir_spectrum.png   Lorentzian-broadened spectrum (peak height = intensity) with sticks
    results.json      settings, static dipole, frequencies (cm^-1), intensities (both units)

Run (seconds for water with the defaults):

    python md_examples/ir_spectrum.py
    python md_examples/ir_spectrum.py --molecule CH3CH2OH --width-cm 10
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import _common  # md_examples/_common.py: shared options, BFGS, results file
import matplotlib.pyplot as plt
import numpy as np
from ase.vibrations import Infrared

from ase_phisnet import PhiSNetCalculator
from ase_phisnet.data.sampling import resolve_molecule
from ase_phisnet.interface.potentials import default_potential


def parse_args(argv=None):
    parser = _common.argument_parser(__doc__)
    _common.add_bfgs_arguments(parser, fmax=0.001, before="the vibrations")
    parser.add_argument("--delta-ang", type=float, default=0.01,
                        help="finite-difference displacement (Å)")
    parser.add_argument("--width-cm", type=float, default=20.0,
                        help="Lorentzian full width at half maximum (cm^-1)")
    parser.add_argument("--start-cm", type=float, default=400.0, help="spectrum start (cm^-1)")
    parser.add_argument("--end-cm", type=float, default=None,
                        help="spectrum end (cm^-1; default: highest frequency + 500)")
    return _common.parse_args(parser, argv, __file__)


def plot_spectrum(wavenumbers_cm, spectrum_km_mol, frequencies_cm, intensities_km_mol,
                  width_cm: float, path: Path, title: str) -> None:
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.vlines(frequencies_cm, 0, intensities_km_mol, color="0.6", lw=1.0, label="modes")
    axes.plot(wavenumbers_cm, spectrum_km_mol, lw=1.2,
              label=f"Lorentzian, FWHM {width_cm:g} cm$^{{-1}}$")
    axes.set_xlabel("wavenumber (cm$^{-1}$)")
    axes.set_ylabel("intensity (km/mol)")
    axes.set_xlim(wavenumbers_cm[-1], wavenumbers_cm[0])  # chemists' convention: high to low
    axes.set_ylim(bottom=0)
    axes.legend()
    axes.set_title(title)
    _common.save_figure(figure, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    atoms = resolve_molecule(args.molecule)
    model = args.model or default_potential(atoms)
    bfgs = _common.relax(atoms, PhiSNetCalculator(model=model), args.fmax, args.max_steps)
    n_vibrations = 3 * len(atoms) - 6  # nonlinear molecules

    with tempfile.TemporaryDirectory() as cache:  # ASE caches displaced forces/dipoles on disk
        infrared = Infrared(atoms, name=os.path.join(cache, "ir"), delta=args.delta_ang, nfree=2)
        infrared.run()
        infrared.summary(log=io.StringIO())  # reads the cache: frequencies, intensities
        frequencies = infrared.get_frequencies()[-n_vibrations:]
    if np.any(frequencies.imag != 0):
        print("warning: imaginary vibrational frequency: not at a minimum", file=sys.stderr)
    frequencies_cm = frequencies.real
    km_mol_per_unit, _ = infrared.intensity_prefactor("km/mol")
    intensities = np.asarray(infrared.intensities[-n_vibrations:])  # (D/Å)^2 / amu
    intensities_km_mol = intensities * km_mol_per_unit

    end_cm = args.end_cm or float(frequencies_cm.max()) + 500.0
    wavenumbers_cm, spectrum = infrared.get_spectrum(
        start=args.start_cm, end=end_cm, npts=int(end_cm - args.start_cm) + 1,
        width=args.width_cm, type="Lorentzian")

    print(f"{atoms.get_chemical_formula()} with {model}: BFGS {bfgs['steps']} steps "
          f"(converged {bfgs['converged']}); static dipole {infrared.dipole_zero:.3f} D")
    print(f"{'mode':>4} {'cm^-1':>10} {'(D/Å)^2/amu':>13} {'km/mol':>10}")
    for mode, (frequency, intensity, intensity_km) in enumerate(
            zip(frequencies_cm, intensities, intensities_km_mol), 1):
        print(f"{mode:4d} {frequency:10.1f} {intensity:13.4f} {intensity_km:10.1f}")

    plot_spectrum(wavenumbers_cm, spectrum * km_mol_per_unit, frequencies_cm, intensities_km_mol,
                  args.width_cm, args.out / "ir_spectrum.png",
                  f"IR spectrum of {atoms.get_chemical_formula()}, {model}")
    results = {
        "molecule": args.molecule, "model": model,
        "settings": _common.settings(args),
        "bfgs_steps": bfgs["steps"], "bfgs_converged": bfgs["converged"],
        "static_dipole_debye": float(infrared.dipole_zero),
        "frequencies_cm": frequencies_cm.tolist(),
        "imaginary_modes": int(np.count_nonzero(frequencies.imag != 0)),
        "intensities_debye2_per_ang2_amu": intensities.tolist(),
        "intensities_km_per_mol": intensities_km_mol.tolist(),
    }
    _common.write_results(results, args.out)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    _common.run(main)
