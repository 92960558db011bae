"""Learning curves against CPU time: H and occupied orbital-energy errors of a training run,
on its test split and on a separate held-out set, every few CPU-minutes.

On a small CPU what counts is accuracy per CPU-hour, not per epoch, so each variant of the
network (a training config) trains in chunks of ``--interval-minutes`` with one torch thread,
resuming from its checkpoint, and after each chunk its best (EMA) model is evaluated (float64)
on the config's recorded test split and on every record of ``--heldout`` (geometries generated
with another seed and never trained on). Evaluation time is not counted. Each variant writes
``OUT/<config stem>.json``; ``--plot`` draws every JSON of a folder into one PNG.

Reproduce (data commands in the configs' first comments; CPU time, not wall time, is what the
curves count, so variants may share the cores):

    ase-phisnet generate --molecule H2O --n 200 --xc pbe --basis def2-svp --temperature 500 \\
        --workers 2 --seed 1 --out data/water_pbe_def2svp_500k_seed1.h5
    ase-phisnet generate --molecule CH3CH2OH --n 100 --xc pbe --basis def2-svp \\
        --temperature 500 --workers 2 --seed 1 --out data/ethanol_pbe_def2svp_500k_seed1.h5
    for variant in previous_default core_baseline core_sap_baseline default default_small \\
                   default_sapgraspsmall; do
        python benchmarks/learning_curves.py benchmarks/learning_curves/water_$variant.yaml \\
            --heldout data/water_pbe_def2svp_500k_seed1.h5 --budget-minutes 30
    done
    for variant in previous_default default default_small default_orbital_energies; do
        python benchmarks/learning_curves.py benchmarks/learning_curves/ethanol_$variant.yaml \\
            --heldout data/ethanol_pbe_def2svp_500k_seed1.h5 --budget-minutes 120
    done
    python benchmarks/learning_curves.py --plot benchmarks/results/learning_curves

The SAP fits side by side (each pair at once, one process per core, into its own folder):

    for variant in default default_sapcompact; do
        python benchmarks/learning_curves.py benchmarks/learning_curves/water_$variant.yaml \
            --heldout data/water_pbe_def2svp_500k_seed1.h5 --budget-minutes 30 \
            --out benchmarks/results/learning_curves/sap_fits &
    done; wait
    ase-phisnet generate --molecule CH3CH2OH --n 300 --xc pbe --basis def2-svp \
        --temperature 300 500 --workers 2 --seed 0 --out data/ethanol_pbe_def2svp_300.h5
    for fit in sapgrasplarge sapcompact; do
        python benchmarks/learning_curves.py benchmarks/learning_curves/ethanol300_$fit.yaml \
            --heldout data/ethanol_pbe_def2svp_500k_seed1.h5 --budget-minutes 25 \
            --out benchmarks/results/learning_curves/sap_fits &
    done; wait
    python benchmarks/learning_curves.py --plot benchmarks/results/learning_curves/sap_fits

``--extend`` continues the curves in ``--out`` to a larger ``--budget-minutes`` from the
checkpoints in ``runs/``. The committed ethanol curves stop short of the 120-minute budget (5 to
48 CPU-minutes; docs/benchmarks.md gives the last point of each).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import time

import torch

from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.electronic.model_file import load_model_file
from ase_phisnet.training.config import TrainConfig
from ase_phisnet.training.evaluate import evaluate_model, trained_test_split
from ase_phisnet.training.loop import train

DEFAULT_OUT = "benchmarks/results/learning_curves"


def errors(model, dataset, positions) -> dict:
    """H and occupied orbital-energy MAE (µEh) of ``model`` on ``positions`` of ``dataset``."""
    metrics = evaluate_model(model, dataset, positions, energies=False)
    return {"hamiltonian_mae_ueh": metrics.hamiltonian_mae_ueh,
            "occupied_energy_mae_ueh": metrics.occupied_energy_mae_ueh,
            "n_geometries": metrics.n_geometries}


def learning_curve(config_path: str, heldout_path: str, budget_minutes: float,
                   interval_minutes: float, out_path: str,
                   earlier_points: list | None = None) -> dict:
    """Train ``config_path`` for ``budget_minutes`` of CPU time in chunks; the errors after
    each chunk (module docstring), written to ``out_path`` after every chunk (a stopped run
    keeps its curve). ``earlier_points``: the points of an earlier call on the same config,
    whose run resumes from its checkpoint; the CPU count goes on from them."""
    from tqdm.auto import tqdm

    config = TrainConfig.from_yaml(config_path)
    with open(config_path) as handle:
        config_text = handle.read()
    heldout = HamiltonianDataset(heldout_path)
    chunk = dataclasses.replace(config, optim=dataclasses.replace(
        config.optim, max_time_minutes=interval_minutes))
    points = list(earlier_points or [])
    cpu_seconds = 60 * points[-1]["cpu_minutes"] if points else 0.0
    last_epoch = points[-1]["epoch"] if points else -1
    bar = tqdm(total=round(budget_minutes, 1), initial=round(cpu_seconds / 60, 1),
               unit="CPU-min", desc=os.path.basename(config_path))
    while cpu_seconds < 60 * budget_minutes:
        start = time.process_time()
        result = train(chunk, progress=False)
        cpu_seconds += time.process_time() - start
        if result.epochs == last_epoch:  # nothing trained: the run had already ended
            break
        last_epoch = result.epochs
        model, meta = load_model_file(result.best_model_path)
        model = model.double()
        dataset = HamiltonianDataset(meta["training"]["dataset"])
        points.append({"cpu_minutes": cpu_seconds / 60, "train_minutes": result.wall_time_s / 60,
                       "epoch": result.epochs,
                       "test": errors(model, dataset, trained_test_split(meta, dataset)),
                       "heldout": errors(model, heldout, range(len(heldout)))})
        curve = {"config": config_path, "config_text": config_text,
                 "heldout": heldout_path, "threads": torch.get_num_threads(), "points": points}
        with open(out_path, "w") as handle:
            json.dump(curve, handle, indent=1)
        bar.update(round(min(cpu_seconds / 60, budget_minutes) - bar.n, 1))
        bar.set_postfix(H_test=f"{points[-1]['test']['hamiltonian_mae_ueh']:.0f}",
                        H_heldout=f"{points[-1]['heldout']['hamiltonian_mae_ueh']:.0f}")
        if result.stop_reason != "time budget":  # early stopping or max_epochs
            break
    bar.close()
    return points


def plot(folder: str) -> str:
    """One PNG of every curve in ``folder``: for each molecule (the JSON name's first word) a
    row with H and occupied-ε MAE against CPU-minutes, test split solid, held-out set dashed
    (log scale)."""
    import matplotlib

    matplotlib.use("Agg")  # a script, not a library: no display here
    import matplotlib.pyplot as plt

    runs = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        stem = os.path.splitext(os.path.basename(path))[0]
        with open(path) as handle:
            runs.setdefault(stem.split("_")[0], {})[stem] = json.load(handle)
    figure, axes = plt.subplots(len(runs), 2, figsize=(12, 4.4 * len(runs)), squeeze=False)
    for row, (molecule, curves) in zip(axes, sorted(runs.items(), reverse=True)):
        for label, run in curves.items():
            minutes = [p["cpu_minutes"] for p in run["points"]]
            for axis, key in zip(row, ("hamiltonian_mae_ueh", "occupied_energy_mae_ueh")):
                line, = axis.plot(minutes, [p["test"][key] for p in run["points"]], "-o", ms=3,
                                  label=f"{label} (test split)")
                axis.plot(minutes, [p["heldout"][key] for p in run["points"]], "--",
                          color=line.get_color(), label=f"{label} (held-out 500 K)")
        for axis, title in zip(row, ("H MAE (µEh)", "occupied orbital-energy MAE (µEh)")):
            axis.set(xlabel="CPU-minutes of training (1 thread)", ylabel=title, yscale="log",
                     title=molecule)
            axis.grid(alpha=0.3)
        row[0].legend(fontsize=7)
    figure.tight_layout()
    out = os.path.join(folder, "learning_curves.png")
    figure.savefig(out, dpi=110)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", help="training configs (YAML), one curve each")
    parser.add_argument("--heldout", help="held-out data file (another seed, never trained on)")
    parser.add_argument("--budget-minutes", type=float, default=120.0)
    parser.add_argument("--interval-minutes", type=float, default=4.0)
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder of the JSON files and PNG")
    parser.add_argument("--plot", metavar="FOLDER", help="only draw the JSON files of FOLDER")
    parser.add_argument("--extend", action="store_true",
                        help="continue the curves in --out up to --budget-minutes (each run "
                             "resumes from its checkpoint)")
    args = parser.parse_args()
    if args.plot:
        print(plot(args.plot))
        return
    if not args.configs or not args.heldout:
        parser.error("give training configs and --heldout (or --plot FOLDER)")
    torch.set_num_threads(1)  # CPU-minutes of one core: curves comparable across variants
    os.makedirs(args.out, exist_ok=True)
    for config_path in args.configs:
        stem = os.path.splitext(os.path.basename(config_path))[0]
        path = os.path.join(args.out, f"{stem}.json")
        earlier = None
        if args.extend:
            if not os.path.exists(path):
                parser.error(f"--extend: {path} does not exist")
            with open(path) as handle:
                earlier = json.load(handle)
            if earlier["heldout"] != args.heldout:
                parser.error(f"--extend: {path} was measured on {earlier['heldout']}")
        points = learning_curve(config_path, args.heldout, args.budget_minutes,
                                args.interval_minutes, path, earlier and earlier["points"])
        print(json.dumps(points[-1], indent=1) if points else "no points")


if __name__ == "__main__":
    main()
