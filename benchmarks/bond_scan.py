"""Energy along stretched and compressed bonds, or opened and closed bond angles: trained
potentials against PySCF.

A potential is fit for MD only if its energy rises where a bond or an angle leaves the data,
on both sides. This script scales chosen bonds of the molecule's ASE geometry (the fragment on
one side moves rigidly, as ``--bond-stretch`` sampling does), or with ``--angles`` chosen bond
angles (rigid rotation of one side, as ``--angle-scale`` sampling does: no bond length
changes), and plots each model's energy against PySCF's at the models' theory, both relative
to their value at the unscaled geometry::

    python benchmarks/bond_scan.py ethanol-pbe-def2svp \\
        runs/ethanol_pbe_def2svp_mlip/best_model.pt --molecule CH3CH2OH
    python benchmarks/bond_scan.py water-pbe-def2svp --molecule H2O --angles \\
        --factors 0.5 1.4 19

Bonds default to every distinct element pair's first bond (ethanol: C-C, C-O, C-H, O-H);
angles to every distinct element triple's first angle outside a ring (water: H-O-H).
PySCF energies are cached in ``<out>/<kind>_scan_<molecule>_pyscf.json``; a model that fails at
a point (no HOMO-LUMO gap) gets no point there. Results go to
``<out>/<kind>_scan_<molecule>.json`` and ``.png``, ``kind`` ``bond`` or ``angle``.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings

import numpy as np
import torch
from ase.data import chemical_symbols
from ase.units import Bohr, Hartree

from ase_phisnet.core.errors import PhiSNetError
from ase_phisnet.data.reference import Theory, compute_reference
from ase_phisnet.data.sampling import (
    bond_angles,
    covalent_bonds,
    resolve_molecule,
    scale_angle,
    scale_bond,
)
from ase_phisnet.electronic.model import predict_energy
from ase_phisnet.electronic.model_file import load_model
from ase_phisnet.interface.calculator import resolve_model_path


def first_bond_per_element_pair(atoms):
    chosen = {}
    for i, j in covalent_bonds(atoms):
        key = tuple(sorted((atoms.numbers[i], atoms.numbers[j])))
        chosen.setdefault(key, (i, j))
    return list(chosen.values())


def first_angle_per_element_triple(atoms):
    chosen = {}
    for i, j, k in bond_angles(atoms):
        outer = tuple(sorted((atoms.numbers[i], atoms.numbers[k])))
        chosen.setdefault((atoms.numbers[j], outer), (i, j, k))
    return list(chosen.values())


def scan_coordinates(atoms, angles: bool):
    """``[(label, value, unit, geometry(factor))]``: each bond (Å) or angle (degrees)
    scanned, with the function that scales it."""
    def name(index):
        return f"{chemical_symbols[atoms.numbers[index]]}{index}"

    if angles:
        return [("-".join(name(a) for a in angle), float(atoms.get_angle(*angle)), "°",
                 lambda f, angle=angle: scale_angle(atoms, atoms.positions, angle, f))
                for angle in first_angle_per_element_triple(atoms)]
    return [(f"{name(bond[0])}-{name(bond[1])}", float(atoms.get_distance(*bond)), "Å",
             lambda f, bond=bond: scale_bond(atoms, atoms.positions, bond, f))
            for bond in first_bond_per_element_pair(atoms)]


def model_energy_ev(model, atoms, positions) -> float:
    z = torch.tensor(atoms.numbers)
    with torch.no_grad():
        try:
            energy_eh = predict_energy(model, z, torch.tensor(positions / Bohr)).energy_eh
        except PhiSNetError:
            return float("nan")
    return float(energy_eh) * Hartree


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model files (or shipped names)")
    parser.add_argument("--molecule", default="CH3CH2OH")
    parser.add_argument("--factors", type=float, nargs=3, default=(0.8, 1.6, 17),
                        metavar=("LOW", "HIGH", "N"),
                        help="bond or angle scale factors (linspace)")
    parser.add_argument("--angles", action="store_true",
                        help="scan bond angles instead of bond lengths")
    parser.add_argument("--xc", default="pbe", help="the models' functional (PySCF reference)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    models = {name: load_model(resolve_model_path(name)).double().eval() for name in args.models}
    theory = Theory(xc=args.xc, basis=next(iter(models.values())).config.basis)
    atoms = resolve_molecule(args.molecule)
    kind = "angle" if args.angles else "bond"
    factors = np.linspace(args.factors[0], args.factors[1], int(args.factors[2]))
    os.makedirs(args.out, exist_ok=True)
    cache_path = os.path.join(args.out, f"{kind}_scan_{args.molecule}_pyscf.json")
    cache = {}
    if os.path.exists(cache_path):
        with open(cache_path) as handle:
            cache = json.load(handle)

    results = {"molecule": args.molecule, "theory": theory.to_dict(), "kind": kind,
               "factors": factors.tolist(), "coordinates": {}}
    for label, value, unit, scaled in scan_coordinates(atoms, args.angles):
        geometries = [scaled(f) for f in factors]
        reference = []
        for factor, positions in zip(factors, geometries):
            key = f"{label}@{factor:.4f}"
            if key not in cache:
                record = compute_reference(atoms.numbers, positions / Bohr, theory)
                cache[key] = record.energy_eh * Hartree
                with open(cache_path, "w") as handle:
                    json.dump(cache, handle, indent=1)
            reference.append(cache[key])
        entry = {"value": value, "unit": unit, "pyscf_ev": reference, "models_ev": {}}
        center = int(np.argmin(np.abs(factors - 1.0)))
        for name, model in models.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                energies = [model_energy_ev(model, atoms, p) for p in geometries]
            entry["models_ev"][name] = energies
        entry["pyscf_ev"] = (np.array(reference) - reference[center]).tolist()
        for name in models:
            values = np.array(entry["models_ev"][name])
            entry["models_ev"][name] = (values - values[center]).tolist()
        results["coordinates"][label] = entry
        print(f"{label} ({value:.3f} {unit}):")
        print(f"  factor  {kind}  PySCF  " + "  ".join(
            os.path.basename(os.path.dirname(n)) or n for n in models))
        for k, factor in enumerate(factors):
            row = "  ".join(f"{entry['models_ev'][n][k]:8.3f}" for n in models)
            print(f"  {factor:5.2f}  {factor * value:7.3f}  {entry['pyscf_ev'][k]:7.3f}  {row}")
    stem = os.path.join(args.out, f"{kind}_scan_{args.molecule}")
    with open(stem + ".json", "w") as handle:
        json.dump(results, handle, indent=1)
    plot(results, stem + ".png")
    print(f"wrote {stem}.json and .png")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coordinates = results["coordinates"]
    figure, axes = plt.subplots(1, len(coordinates), figsize=(4 * len(coordinates), 3.6),
                                squeeze=False)
    for axis, (label, entry) in zip(axes[0], coordinates.items()):
        values = np.array(results["factors"]) * entry["value"]
        axis.plot(values, entry["pyscf_ev"], "k-", lw=2, label="PySCF PBE")
        for name, energies in entry["models_ev"].items():
            short = os.path.basename(os.path.dirname(name)) or name
            axis.plot(values, energies, "o-", ms=3, label=short)
        axis.set_title(label)
        axis.set_xlabel(f"{results['kind']} ({entry['unit']})")
        axis.set_ylim(-2, 8)
    axes[0][0].set_ylabel("E - E(equilibrium) (eV)")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
