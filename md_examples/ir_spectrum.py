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

import argparse
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from ase.build import molecule
from ase.calculators.calculator import CalculatorSetupError
from ase.io import read
from ase.optimize import BFGS
from ase.vibrations import Infrared

from ase_phisnet import PhiSNetCalculator

SCRIPT = Path(__file__).resolve()
#: Shipped potential used when --model is not given, by molecule name.
DEFAULT_MODELS = {"H2O": "water-pbe-def2svp", "CH3CH2OH": "ethanol-pbe-def2svp"}


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
                        help="finite-difference displacement (Å)")
    parser.add_argument("--width-cm", type=float, default=20.0,
                        help="Lorentzian full width at half maximum (cm^-1)")
    parser.add_argument("--start-cm", type=float, default=400.0, help="spectrum start (cm^-1)")
    parser.add_argument("--end-cm", type=float, default=None,
                        help="spectrum end (cm^-1; default: highest frequency + 500)")
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
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model = model_for(args)
    atoms = load_molecule(args.molecule)
    atoms.calc = PhiSNetCalculator(model=model)
    optimizer = BFGS(atoms, logfile=None)
    converged = bool(optimizer.run(fmax=args.fmax, steps=args.max_steps))
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

    print(f"{atoms.get_chemical_formula()} with {model}: BFGS {optimizer.nsteps} steps "
          f"(converged {converged}); static dipole {infrared.dipole_zero:.3f} D")
    print(f"{'mode':>4} {'cm^-1':>10} {'(D/Å)^2/amu':>13} {'km/mol':>10}")
    for mode, (frequency, intensity, intensity_km) in enumerate(
            zip(frequencies_cm, intensities, intensities_km_mol), 1):
        print(f"{mode:4d} {frequency:10.1f} {intensity:13.4f} {intensity_km:10.1f}")

    plot_spectrum(wavenumbers_cm, spectrum * km_mol_per_unit, frequencies_cm, intensities_km_mol,
                  args.width_cm, args.out / "ir_spectrum.png",
                  f"IR spectrum of {atoms.get_chemical_formula()}, {model}")
    results = {
        "molecule": args.molecule, "model": model,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "bfgs_steps": optimizer.nsteps, "bfgs_converged": converged,
        "static_dipole_debye": float(infrared.dipole_zero),
        "frequencies_cm": frequencies_cm.tolist(),
        "imaginary_modes": int(np.count_nonzero(frequencies.imag != 0)),
        "intensities_debye2_per_ang2_amu": intensities.tolist(),
        "intensities_km_per_mol": intensities_km_mol.tolist(),
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
