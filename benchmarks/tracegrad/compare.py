"""Plain PhiSNet vs TraceGrad on the same data and the same wall-clock budget.

Reproduce (from the repository root; data: see the YAML files' first comment):

    ase-phisnet train benchmarks/tracegrad/plain.yaml &
    ase-phisnet train benchmarks/tracegrad/tracegrad.yaml &   # concurrently, one core each
    python benchmarks/tracegrad/compare.py

Evaluates both best (EMA) models on their common test split and writes
``benchmarks/tracegrad/results.json`` and ``results.md``.
"""

from __future__ import annotations

import json
import os

import torch

from ase_phisnet.core.errors import ModelFileError
from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.electronic.model import ModelConfig, PhiSNetModel
from ase_phisnet.electronic.model_file import load_model, upgraded_state_dict
from ase_phisnet.training.evaluate import evaluate_model, trained_test_split

RUNS = {"plain": "runs/tracegrad_benchmark/plain",
        "tracegrad": "runs/tracegrad_benchmark/tracegrad"}
HERE = os.path.dirname(os.path.abspath(__file__))


def _load_matrices_model(path, meta):
    """Load a model; these runs predate the energy head, which H/S metrics do not use."""
    try:
        return load_model(path).to(torch.float64)
    except ModelFileError:
        model = PhiSNetModel(ModelConfig.from_dict(meta["config"]))
        state = upgraded_state_dict(torch.load(path, weights_only=True)["state_dict"],
                                    meta["format_version"])
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and all(k.startswith("remainder.") for k in missing)
        return model.to(torch.float64)


def main():
    rows = {}
    for label, folder in RUNS.items():
        path = os.path.join(folder, "best_model.pt")
        with open(path + ".json") as handle:
            meta = json.load(handle)
        training = meta["training"]
        dataset = HamiltonianDataset(training["dataset"])
        model = _load_matrices_model(path, meta)
        metrics = evaluate_model(model, dataset, trained_test_split(meta, dataset))
        with open(os.path.join(folder, "checkpoint.pt"), "rb") as handle:
            state = torch.load(handle, weights_only=False)["state"]
        rows[label] = {**metrics.__dict__, "best_epoch": training["epoch"],
                       "epochs_run": state["epoch"],
                       "training_time_s": round(state["train_time_s"], 1)}
        print(label, json.dumps(rows[label], indent=1))
    with open(os.path.join(HERE, "results.json"), "w") as handle:
        json.dump(rows, handle, indent=2)
    lines = ["| metric (water PBE/def2-SVP, test split) | plain | TraceGrad |", "|---|---|---|"]
    for key, name, fmt in [
        ("hamiltonian_mae_ueh", "H MAE (µEh)", "{:.1f}"),
        ("overlap_mae", "S MAE", "{:.2e}"),
        ("core_hamiltonian_mae_ueh", "core H MAE (µEh)", "{:.1f}"),
        ("occupied_energy_mae_ueh", "occupied ε MAE (µEh)", "{:.1f}"),
        ("occupied_cosine_similarity_pct", "occupied orbital cosine (%)", "{:.3f}"),
        ("epochs_run", "epochs in the budget", "{}"),
        ("best_epoch", "best epoch", "{}"),
        ("training_time_s", "training time (s)", "{:.0f}"),
        ("seconds_per_geometry", "inference (s/geometry, batch 16)", "{:.4f}"),
    ]:
        lines.append(f"| {name} | " + " | ".join(fmt.format(rows[k][key]) for k in RUNS) + " |")
    with open(os.path.join(HERE, "results.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
