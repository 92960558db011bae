"""Energy along stretched and compressed bonds: trained potentials against PySCF.

A potential is fit for MD only if its energy rises where a bond leaves the data, on both sides.
This script scales chosen bonds of the molecule's ASE geometry (the fragment on one side moves
rigidly, as ``--bond-stretch`` sampling does), and plots each model's energy against PySCF's at
the models' theory, both relative to their value at the unscaled geometry::

    python benchmarks/bond_scan.py ethanol-pbe-def2svp \\
        runs/ethanol_pbe_def2svp_mlip/best_model.pt --molecule CH3CH2OH

Bonds default to every distinct element pair's first bond (ethanol: C-C, C-O, C-H, O-H).
PySCF energies are cached in ``<out>/bond_scan_<molecule>_pyscf.json``; a model that fails at a
point (no HOMO-LUMO gap) gets no point there. Results go to ``<out>/bond_scan_<molecule>.json``
and ``.png``.
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
from ase_phisnet.data.sampling import covalent_bonds, resolve_molecule, scale_bond
from ase_phisnet.electronic.model import predict_energy
from ase_phisnet.electronic.model_file import load_model
from ase_phisnet.interface.calculator import resolve_model_path


def first_bond_per_element_pair(atoms):
    chosen = {}
    for i, j in covalent_bonds(atoms):
        key = tuple(sorted((atoms.numbers[i], atoms.numbers[j])))
        chosen.setdefault(key, (i, j))
    return list(chosen.values())


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
                        metavar=("LOW", "HIGH", "N"), help="bond scale factors (linspace)")
    parser.add_argument("--xc", default="pbe", help="the models' functional (PySCF reference)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    models = {name: load_model(resolve_model_path(name)).double().eval() for name in args.models}
    theory = Theory(xc=args.xc, basis=next(iter(models.values())).config.basis)
    atoms = resolve_molecule(args.molecule)
    bonds = first_bond_per_element_pair(atoms)
    factors = np.linspace(args.factors[0], args.factors[1], int(args.factors[2]))
    os.makedirs(args.out, exist_ok=True)
    cache_path = os.path.join(args.out, f"bond_scan_{args.molecule}_pyscf.json")
    cache = {}
    if os.path.exists(cache_path):
        with open(cache_path) as handle:
            cache = json.load(handle)

    results = {"molecule": args.molecule, "theory": theory.to_dict(),
               "factors": factors.tolist(), "bonds": {}}
    for bond in bonds:
        label = f"{chemical_symbols[atoms.numbers[bond[0]]]}{bond[0]}-" \
                f"{chemical_symbols[atoms.numbers[bond[1]]]}{bond[1]}"
        length = float(atoms.get_distance(*bond))
        geometries = [scale_bond(atoms, atoms.positions, bond, f) for f in factors]
        reference = []
        for factor, positions in zip(factors, geometries):
            key = f"{label}@{factor:.4f}"
            if key not in cache:
                record = compute_reference(atoms.numbers, positions / Bohr, theory)
                cache[key] = record.energy_eh * Hartree
                with open(cache_path, "w") as handle:
                    json.dump(cache, handle, indent=1)
            reference.append(cache[key])
        entry = {"length_ang": length, "pyscf_ev": reference, "models_ev": {}}
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
        results["bonds"][label] = entry
        print(f"{label} ({length:.3f} Å):")
        print("  factor  length  PySCF  " + "  ".join(os.path.basename(os.path.dirname(n)) or n
                                                     for n in models))
        for k, factor in enumerate(factors):
            row = "  ".join(f"{entry['models_ev'][n][k]:8.3f}" for n in models)
            print(f"  {factor:5.2f}  {factor * length:6.3f}  {entry['pyscf_ev'][k]:7.3f}  {row}")
    stem = os.path.join(args.out, f"bond_scan_{args.molecule}")
    with open(stem + ".json", "w") as handle:
        json.dump(results, handle, indent=1)
    plot(results, stem + ".png")
    print(f"wrote {stem}.json and .png")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bonds = results["bonds"]
    figure, axes = plt.subplots(1, len(bonds), figsize=(4 * len(bonds), 3.6), squeeze=False)
    for axis, (label, entry) in zip(axes[0], bonds.items()):
        lengths = np.array(results["factors"]) * entry["length_ang"]
        axis.plot(lengths, entry["pyscf_ev"], "k-", lw=2, label="PySCF PBE")
        for name, energies in entry["models_ev"].items():
            short = os.path.basename(os.path.dirname(name)) or name
            axis.plot(lengths, energies, "o-", ms=3, label=short)
        axis.set_title(label)
        axis.set_xlabel("bond length (Å)")
        axis.set_ylim(-2, 8)
    axes[0][0].set_ylabel("E - E(equilibrium) (eV)")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
