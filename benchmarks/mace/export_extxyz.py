"""Write a shipped potential's data as extended-XYZ files for MACE (``mace_run_train``).

The same geometries as the potential, from the splits its model file records: ``train.xyz``
(the main file's training split and every extra file's, e.g. the bond-stretched and bent
ones, each repeated as often as the potential's training oversampled it), ``valid.xyz`` (the main file's validation split: MACE selects its epoch on thermal
geometries, as the potential does), ``test.xyz`` (the main file's test split),
``extra_test.xyz`` (the extra files' test records) and ``heldout.xyz`` (a set never trained
on). Energies in eV under ``REF_energy``, forces in eV/Å under ``REF_forces`` (ASE units; the
``REF_`` keys keep ASE from reading them as a calculator's results).

Runs in the package's environment (it reads the HDF5 data):

    python benchmarks/mace/export_extxyz.py potentials/water-pbe-def2svp.pt \\
        --heldout data/water_pbe_def2svp_500k_seed1.h5 --out runs/mace_water
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from ase import Atoms
from ase.io import write
from ase.units import Bohr, Hartree

from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.training.data import recorded_split


def frames(dataset: HamiltonianDataset, rows) -> list[Atoms]:
    """The records at ``rows`` as Atoms with ``REF_energy`` (eV) and ``REF_forces`` (eV/Å)."""
    out = []
    for row in rows:
        record = dataset[int(row)]
        atoms = Atoms(numbers=record.atomic_numbers, positions=record.positions_bohr * Bohr)
        atoms.info["REF_energy"] = float(record.energy_eh * Hartree)
        atoms.arrays["REF_forces"] = record.forces_eh_per_bohr * Hartree / Bohr
        out.append(atoms)
    return out


def opened(path: str, fallback: str) -> HamiltonianDataset:
    return HamiltonianDataset(path if os.path.exists(path) else fallback)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model file (NAME.pt) whose NAME.pt.json records the "
                                      "training data and splits")
    parser.add_argument("--heldout", required=True, help="a data file never trained on")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()

    with open(args.model + ".json") as handle:
        record = json.load(handle)["training"]
    main_data = opened(record["dataset"], os.path.join("data",
                                                       os.path.basename(record["dataset"])))
    split = recorded_split(main_data, record["split"])
    sets = {"train": frames(main_data, split.train), "valid": frames(main_data, split.validation),
            "test": frames(main_data, split.test), "extra_test": []}
    configured = record.get("config", {}).get("extra_data", [])
    for index, extra in enumerate(record.get("extra_data", [])):
        data = opened(extra["dataset"], os.path.join("data", os.path.basename(extra["dataset"])))
        part = recorded_split(data, extra["split"])
        repeat = configured[index].get("repeat", 1) if index < len(configured) else 1
        sets["train"] += frames(data, part.train) * repeat
        sets["extra_test"] += frames(data, part.test)
    heldout = HamiltonianDataset(args.heldout)
    sets["heldout"] = frames(heldout, range(len(heldout)))
    os.makedirs(args.out, exist_ok=True)
    for name, atoms in sets.items():
        if atoms:
            write(os.path.join(args.out, f"{name}.xyz"), atoms, format="extxyz")
    print(json.dumps({name: len(atoms) for name, atoms in sets.items()}))


if __name__ == "__main__":
    main()
