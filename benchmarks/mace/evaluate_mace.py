"""Errors and call time of a MACE model on the sets of ``export_extxyz.py``.

Runs in MACE's own environment (``mace-torch`` pins ``e3nn`` 0.4.4, which the package's e3nn
does not match); imports nothing of ase_phisnet. For each of ``test.xyz``, ``extra_test.xyz``
and ``heldout.xyz`` in ``--data``: energy MAE (meV), force MAE per component and the largest
per-atom force error (norm of the error vector, meV/Å), as ``benchmarks/one_potential.py``
reports them; the energy MAE once more after subtracting the mean energy error on the
validation split (``valid.xyz``): MACE's element energies (``--E0s average``, a least-squares
fit that one composition cannot pin down) can leave a constant offset that moves no force
and that the potential's own refit of its element constants removes; and the energy+forces call time through MACE's ASE calculator (median after
warm-up, float64, the thread count of the run).

    python benchmarks/mace/evaluate_mace.py runs/mace_water/water_mace.model \\
        --data runs/mace_water --out benchmarks/results/one_potential/water_mace.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from ase.io import read


def energy_force_errors(model_path: str, frames, device: str = "cpu"):
    """``(energy errors (n,) eV, force errors (n, A, 3) eV/Å)``, prediction minus reference."""
    from mace.calculators import MACECalculator

    calculator = MACECalculator(model_paths=model_path, device=device, default_dtype="float64")
    energy_errors, force_errors = [], []
    for atoms in frames:
        reference_energy = atoms.info["REF_energy"]
        reference_forces = atoms.arrays["REF_forces"].copy()
        atoms = atoms.copy()
        atoms.calc = calculator
        energy_errors.append(atoms.get_potential_energy() - reference_energy)
        force_errors.append(atoms.get_forces() - reference_forces)
    return np.array(energy_errors), np.stack(force_errors)


def errors(energy_errors, force_errors, offset_ev: float) -> dict[str, float]:
    """The metrics of the module docstring (meV, meV/Å); ``offset_ev``: the constant
    subtracted for the shifted energy MAE."""
    return {"energy_mae_mev": 1000 * float(np.abs(energy_errors).mean()),
            "energy_mae_mev_shifted": 1000 * float(np.abs(energy_errors - offset_ev).mean()),
            "forces_mae_mev_per_ang": 1000 * float(np.abs(force_errors).mean()),
            "forces_max_atom_error_mev_per_ang":
                1000 * float(np.linalg.norm(force_errors, axis=-1).max())}


def call_ms(model_path: str, atoms, repeats: int = 30) -> float:
    from mace.calculators import MACECalculator

    atoms = atoms.copy()
    atoms.calc = MACECalculator(model_paths=model_path, device="cpu", default_dtype="float64")
    rng = np.random.default_rng(0)
    times = []
    for k in range(repeats + 1):
        atoms.positions += rng.normal(scale=1e-3, size=atoms.positions.shape)
        start = time.perf_counter()
        atoms.get_forces()
        if k:  # the first call is the warm-up
            times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a MACE model file (mace_run_train's NAME.model)")
    parser.add_argument("--data", required=True, help="the folder export_extxyz.py wrote")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="output JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    validation, _ = energy_force_errors(args.model, read(os.path.join(args.data, "valid.xyz"),
                                                         index=":"))
    offset = float(validation.mean())
    results = {"model": args.model, "threads": args.threads,
               "validation_energy_offset_mev": 1000 * offset}
    for name in ("test", "extra_test", "heldout"):
        path = os.path.join(args.data, f"{name}.xyz")
        if os.path.exists(path):
            frames = read(path, index=":")
            results[name] = {"n_geometries": len(frames),
                             **errors(*energy_force_errors(args.model, frames), offset)}
    results["call_ms"] = call_ms(args.model, read(os.path.join(args.data, "test.xyz"), index=0))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
