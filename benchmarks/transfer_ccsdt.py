"""Transfer learning to CCSD(T): fine-tune a PBE water potential's energy path on CCSD(T).

One command reproduces the table:

    python benchmarks/transfer_ccsdt.py --model water-pbe-def2svp \\
        --data data/water_pbe_def2svp.h5 --cc-data data/water_ccsdt_def2svp.h5

1. Geometries: the PBE potential's own splits of the PBE water set (seed 0): the first 150 of
   its training split and 25 of its validation split for fine-tuning, the first 50 of its test
   split (never trained on at either level) for evaluation.
2. CCSD(T)/def2-SVP energies and analytic forces (PySCF, all electrons) on those geometries,
   resumable (``ase_phisnet.data.highlevel``; ~2 s a geometry on one core).
3. Fine-tuning (``ase_phisnet.training.transfer``): only the energy path beyond the matrices
   (element energies, refitted by least squares, and the energy remainder) on CCSD(T) energies
   and forces; the predicted H, S and core H stay the PBE ones.
4. Errors against CCSD(T) on the 50 test geometries for the fine-tuned model, the PBE model
   without fine-tuning, and PBE/def2-SVP itself (the dataset's own energies and forces). A
   method at another level has a large constant energy offset; energy MAEs are given raw and
   after removing the mean offset (relative energies, what dynamics sees).

Writes ``benchmarks/results/transfer_ccsdt.json``/``.md`` and the fine-tuned model to
``runs/transfer_ccsdt/``.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch

from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.data.highlevel import generate_energies
from ase_phisnet.electronic.model_file import load_model, save_model
from ase_phisnet.interface.potentials import potential_path
from ase_phisnet.training.transfer import (
    FineTuneConfig,
    fine_tune_energy_path,
    predict_energies_forces,
)

N_TRAIN, N_VALIDATION, N_TEST = 150, 25, 50
MEV_PER_EH, BOHR_ANG = 27211.386245988, 0.529177210903


def error_table(predicted_e, predicted_f, reference_e, reference_f) -> dict:
    energy = (predicted_e - reference_e) * MEV_PER_EH
    forces = (predicted_f - reference_f) * MEV_PER_EH / BOHR_ANG
    return {"energy_mae_mev": float(np.abs(energy).mean()),
            "energy_mae_offset_removed_mev": float(np.abs(energy - energy.mean()).mean()),
            "mean_energy_offset_mev": float(energy.mean()),
            "force_mae_mev_per_ang": float(np.abs(forces).mean()),
            "force_max_error_mev_per_ang": float(np.linalg.norm(forces, axis=-1).max())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="water-pbe-def2svp")
    parser.add_argument("--data", default="data/water_pbe_def2svp.h5")
    parser.add_argument("--cc-data", default="data/water_ccsdt_def2svp.h5")
    parser.add_argument("--method", default="ccsd(t)", choices=["ccsd(t)", "ccsd"])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--data-only", action="store_true", help="only make the CC data")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--run-dir", default="runs/transfer_ccsdt")
    args = parser.parse_args()

    model_file = args.model if os.path.exists(args.model) else potential_path(args.model)
    with open(model_file + ".json") as handle:
        split_record = json.load(handle)["training"]["split"]
    dataset = HamiltonianDataset(args.data)
    split = dataset.split(split_record["seed"], split_record["n_train"],
                          split_record["n_validation"], split_record["n_test"])
    rows = np.concatenate([split.train[:N_TRAIN], split.validation[:N_VALIDATION],
                           split.test[:N_TEST]])
    records = [dataset[int(row)] for row in rows]
    positions = np.stack([record.positions_bohr for record in records])
    cc = generate_energies(args.cc_data, records[0].atomic_numbers, positions,
                           dataset.metadata.theory.basis, args.method,
                           source={"dataset": os.path.basename(args.data),
                                   "rows": rows.tolist()})
    if args.data_only:
        return
    parts = {"train": slice(0, N_TRAIN), "validation": slice(N_TRAIN, N_TRAIN + N_VALIDATION),
             "test": slice(N_TRAIN + N_VALIDATION, None)}
    z = torch.as_tensor(cc.atomic_numbers)

    base = load_model(model_file).double()
    config = FineTuneConfig(epochs=args.epochs)
    tuned, history = fine_tune_energy_path(
        load_model(model_file).double(), z,
        *(getattr(cc, name)[parts["train"]] for name in ("positions_bohr", "energy_eh",
                                                         "forces_eh_per_bohr")),
        *(getattr(cc, name)[parts["validation"]] for name in ("positions_bohr", "energy_eh",
                                                              "forces_eh_per_bohr")),
        config)
    os.makedirs(args.run_dir, exist_ok=True)
    save_model(tuned, os.path.join(args.run_dir, "model.pt"),
               extra={"fine_tuned_from": args.model, "method": args.method,
                      "history": history})

    test = parts["test"]
    reference_e, reference_f = cc.energy_eh[test], cc.forces_eh_per_bohr[test]
    test_records = records[test]
    results = {}
    for label, model in (("fine-tuned PhiSNet", tuned), ("PBE PhiSNet, no fine-tuning", base)):
        energy, forces = predict_energies_forces(model, z, cc.positions_bohr[test])
        results[label] = error_table(energy, forces, reference_e, reference_f)
    results["PBE/def2-SVP itself"] = error_table(
        np.array([r.energy_eh for r in test_records]),
        np.stack([r.forces_eh_per_bohr for r in test_records]), reference_e, reference_f)

    method = args.method.upper()
    lines = [f"Errors against {method}/{cc.basis} on {N_TEST} held-out water geometries "
             f"(fine-tuned on {N_TRAIN}, validated on {N_VALIDATION}).", "",
             "| model | energy MAE (meV) | energy MAE, mean offset removed (meV) | "
             "force MAE (meV/Å) | largest force error (meV/Å) |", "|---|---|---|---|---|"]
    for label, row in results.items():
        lines.append(f"| {label} | {row['energy_mae_mev']:.1f} | "
                     f"{row['energy_mae_offset_removed_mev']:.2f} | "
                     f"{row['force_mae_mev_per_ang']:.1f} | "
                     f"{row['force_max_error_mev_per_ang']:.0f} |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "transfer_ccsdt.json"), "w") as handle:
        json.dump({"model": args.model, "method": args.method, "basis": cc.basis,
                   "n_train": N_TRAIN, "n_validation": N_VALIDATION, "n_test": N_TEST,
                   "fine_tune": config.__dict__, "errors": results}, handle, indent=2)
    with open(os.path.join(args.out, "transfer_ccsdt.md"), "w") as handle:
        handle.write(table + "\n")


if __name__ == "__main__":
    main()
