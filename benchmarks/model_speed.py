"""Forward+backward time of PhiSNet's H and S next to PySCF on the same geometry, one run.

For water and ethanol (ASE geometries) and several architectures (random weights: speed does
not depend on them), time ``model(Z, R)`` for H and S and the backward pass to the positions
(what forces need), median of repeated calls after warm-up, float32 and float64, next to PySCF
PBE/def2-SVP energy + analytic gradient on the same geometry.

    python benchmarks/model_speed.py [--repeats 20] [--threads 2] [--out benchmarks/results]

Writes ``model_speed.json`` and ``model_speed.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch
from ase.build import molecule
from ase.units import Bohr

from ase_phisnet.model import ModelConfig, PhiSNet
from ase_phisnet.reference import Theory, compute_reference

ARCHITECTURES = {
    "default (3 layers, 32/16/16/8/8)": {},
    "small (2 layers, 16/8/8/4/4)": {"num_layers": 2, "channels": (16, 8, 8, 4, 4)},
    "wide (3 layers, 64/32/32/16/16)": {"channels": (64, 32, 32, 16, 16)},
}
MOLECULES = {"water": ("H2O", ("H", "O")), "ethanol": ("CH3CH2OH", ("H", "C", "O"))}


def time_model(model, atoms, dtype, repeats):
    z = torch.tensor(atoms.numbers)
    positions = torch.tensor(atoms.positions / Bohr, dtype=dtype, requires_grad=True)
    model = model.to(dtype)
    times = []
    for step in range(repeats + 3):
        start = time.perf_counter()
        out = model(z, positions)
        loss = out["hamiltonian"].sum() + out["overlap"].sum()
        torch.autograd.grad(loss, positions)
        if step >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_pyscf(atoms, repeats):
    theory = Theory(xc="pbe", basis="def2-svp")
    times = [compute_reference(atoms.numbers, atoms.positions / Bohr, theory).wall_time_s
             for _ in range(repeats)]
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--pyscf-repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    results = {"machine": {"cpu_count": os.cpu_count(), "threads": args.threads,
                           "processor": platform.processor(), "torch": torch.__version__},
               "molecules": {}}
    for label, (name, elements) in MOLECULES.items():
        atoms = molecule(name)
        entry = {"n_atoms": len(atoms), "pyscf_pbe_def2svp_energy_gradient_s":
                 time_pyscf(atoms, args.pyscf_repeats), "models": {}}
        for arch, overrides in ARCHITECTURES.items():
            torch.manual_seed(0)
            config = ModelConfig(elements=elements, matrices=("hamiltonian", "overlap"),
                                 **overrides)
            model = PhiSNet(config)
            n_params = sum(p.numel() for p in model.parameters())
            timings = {str(dtype).split(".")[-1]: time_model(model, atoms, dtype, args.repeats)
                       for dtype in (torch.float32, torch.float64)}
            entry["models"][arch] = {"parameters": n_params,
                                     **{f"forward_backward_ms_{k}": 1000 * v
                                        for k, v in timings.items()}}
            print(f"{label:8s} {arch:34s} float32 {1000 * timings['float32']:7.1f} ms  "
                  f"float64 {1000 * timings['float64']:7.1f} ms  ({n_params} parameters)")
        print(f"{label:8s} PySCF PBE/def2-SVP energy+gradient "
              f"{entry['pyscf_pbe_def2svp_energy_gradient_s']:.2f} s")
        results["molecules"][label] = entry
    with open(os.path.join(args.out, "model_speed.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    plot(results, os.path.join(args.out, "model_speed.png"))


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    molecules = list(results["molecules"])
    archs = list(next(iter(results["molecules"].values()))["models"])
    figure, axis = plt.subplots(figsize=(7, 4))
    width = 0.8 / (len(archs) + 1)
    x = np.arange(len(molecules))
    for k, arch in enumerate(archs):
        values = [results["molecules"][m]["models"][arch]["forward_backward_ms_float32"]
                  for m in molecules]
        axis.bar(x + k * width, values, width, label=f"PhiSNet {arch} (float32)")
    pyscf = [1000 * results["molecules"][m]["pyscf_pbe_def2svp_energy_gradient_s"]
             for m in molecules]
    axis.bar(x + len(archs) * width, pyscf, width, label="PySCF PBE/def2-SVP E+grad")
    axis.set_xticks(x + 0.4 - width / 2, molecules)
    axis.set_yscale("log")
    axis.set_ylabel("time per call (ms)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
