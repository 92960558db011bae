"""Energy+forces speed of PhiSNetCalculator next to PySCF and GFN2-xTB, same geometries, one run.

For water, ethanol, benzene and linear alkanes up to 50 atoms (H/C/N/O, def2-SVP), time one
energy+forces call of ``ase_phisnet.PhiSNetCalculator`` (median after warm-up; every call on a
slightly displaced geometry so nothing is cached but what an MD step may reuse), with the network
in float64 and in float32 (eigensolver float64), next to PySCF PBE/def2-SVP energy + analytic
gradient and GFN2-xTB (tblite) energy+forces on the same geometry. Also: the split of our call
(network forward, eigensolver and energy, backward to the positions, calculator overhead), peak
memory, and the exponent of time ~ N_atoms^k.

The models are random-weight models of the default architecture (``ModelConfig(elements=H, C,
N, O)``: the network predicts ``H - H_core - V_SAP``; S, H_core and V_SAP come from PySCF's
integrals): speed does not depend on the weight values. Nothing is fitted. The split separates
the integrals (S, H_core, V_SAP and their position derivatives, timed on their own) from the
network.

    python benchmarks/speed.py [--device cpu|cuda] [--threads 2] [--repeats 20]
                               [--pyscf-max-atoms 12] [--quick] [--sap-basis sapcompact]
                               [--out benchmarks/results]

Writes ``speed.json`` and ``speed.png`` in ``--out`` (``speed_quick.*`` with ``--quick``,
``speed_<fit>.*`` with a ``--sap-basis`` other than the default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule
from ase.units import Bohr

from ase_phisnet import PhiSNetCalculator
from ase_phisnet.electronic.energy import energy_from_outputs, n_occupied_orbitals
from ase_phisnet.core.sap import SAP_BASES
from ase_phisnet.electronic.model import ModelConfig, PhiSNetModel

CC_ANG, CH_ANG, TETRAHEDRAL_DEG = 1.53, 1.09, 109.47


def alkane(n_carbons: int) -> Atoms:
    """Linear all-trans alkane C_n H_(2n+2): carbon zigzag in the xy plane, tetrahedral H.

    Every H direction ``h`` of a carbon with bond directions ``b_k`` satisfies
    ``h . b_k = cos(109.47 deg) = -1/3``.
    """
    half = np.radians(TETRAHEDRAL_DEG) / 2
    carbons = np.array([[k * CC_ANG * np.sin(half), (k % 2) * CC_ANG * np.cos(half), 0.0]
                        for k in range(n_carbons)])
    z_axis = np.array([0.0, 0.0, 1.0])
    positions, symbols = list(carbons), ["C"] * n_carbons
    for k, c in enumerate(carbons):
        bonds = [(carbons[j] - c) / np.linalg.norm(carbons[j] - c)
                 for j in (k - 1, k + 1) if 0 <= j < n_carbons]
        if len(bonds) == 2:  # CH2: in the plane bisecting the C-C-C angle, +-z
            outward = -(bonds[0] + bonds[1])
            outward /= np.linalg.norm(outward)
            directions = [np.cos(half) * outward + s * np.sin(half) * z_axis for s in (1, -1)]
        else:  # CH3 (or CH4): staggered around the single bond
            b = bonds[0] if bonds else np.array([1.0, 0.0, 0.0])
            p = np.cross(z_axis, b)
            p /= np.linalg.norm(p)
            q = np.cross(b, p)
            directions = [-b / 3 + np.sqrt(8 / 9) * (np.cos(a) * p + np.sin(a) * q)
                          for a in np.radians([90.0, 210.0, 330.0])]
            if not bonds:
                directions.append(b)
        for d in directions:
            positions.append(c + CH_ANG * d / np.linalg.norm(d))
            symbols.append("H")
    return Atoms(symbols, positions=positions)


def molecules(quick: bool, only: list[str] | None = None) -> dict[str, Atoms]:
    names = {"water": molecule("H2O"), "ethanol": molecule("CH3CH2OH")}
    if not quick:
        names.update({"benzene": molecule("C6H6"), "octane": alkane(8),
                      "hexadecane": alkane(16)})
    if only:
        unknown = set(only) - set(names)
        if unknown:
            raise SystemExit(f"--molecules: unknown {sorted(unknown)}; choose from {list(names)}")
        names = {name: names[name] for name in only}
    return names


def random_model(seed: int = 0, **config) -> PhiSNetModel:
    """A random-weight model of the default architecture, with ``config`` overriding
    :class:`ModelConfig` fields."""
    torch.manual_seed(seed)
    return PhiSNetModel(ModelConfig(elements=("H", "C", "N", "O"), **config))


def geometries(atoms: Atoms, count: int, seed: int = 0):
    """``count`` copies displaced by 0.01 Å (Gaussian): each call is a new geometry."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        moved = atoms.copy()
        moved.positions += 0.01 * rng.normal(size=moved.positions.shape)
        yield moved


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_calculator(model, atoms, device, network_dtype, repeats, warmup=3):
    calc = PhiSNetCalculator(model=model, device=str(device), dtype="float64",
                             network_dtype=network_dtype)
    times = []
    for step, moved in enumerate(geometries(atoms, repeats + warmup)):
        moved.calc = calc
        synchronize(device)
        start = time.perf_counter()
        moved.get_potential_energy()
        moved.get_forces()
        synchronize(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_split(model, atoms, device, repeats, warmup=3):
    """Median seconds of (model forward, eigensolver + energy, backward) on the same path the
    calculator takes (model in its dtype, eigensolver float64, first-order projector), and of
    the integrals inside the forward and the backward, timed on their own: their values
    (``integrals_forward``) and the pullback of a gradient through their first derivatives
    (``integrals_backward``). ``network_forward`` and ``network_backward`` are the rest."""
    z = torch.as_tensor(atoms.numbers, device=device)
    n_occupied = n_occupied_orbitals(atoms.numbers, 0)
    network_dtype = next(model.parameters()).dtype
    parts = {"model_forward": [], "eigensolver_energy": [], "backward": [],
             "integrals_forward": [], "integrals_backward": []}
    for step, moved in enumerate(geometries(atoms, repeats + warmup, seed=1)):
        positions = torch.as_tensor(moved.positions / Bohr, dtype=torch.float64,
                                    device=device).requires_grad_()
        synchronize(device)
        t0 = time.perf_counter()
        outputs = model(z, positions.to(network_dtype))
        outputs = {k: v.to(torch.float64) for k, v in outputs.items()}
        synchronize(device)
        t1 = time.perf_counter()
        energy = energy_from_outputs(outputs, z, positions, n_occupied, derivative_order=1,
                                     energy_model=model.config.energy_model)
        synchronize(device)
        t2 = time.perf_counter()
        torch.autograd.grad(energy.energy_eh, positions)
        synchronize(device)
        t3 = time.perf_counter()
        exact = model.exact_matrices(z, positions)
        t4 = time.perf_counter()
        upstream = [torch.ones_like(matrix) for matrix in exact.values()]
        t5 = time.perf_counter()
        torch.autograd.grad(list(exact.values()), positions, upstream)
        t6 = time.perf_counter()
        if step >= warmup:
            for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t6 - t5)):
                parts[key].append(value)
    split = {key: statistics.median(values) for key, values in parts.items()}
    split["network_forward"] = split["model_forward"] - split["integrals_forward"]
    split["network_backward"] = split["backward"] - split["integrals_backward"]
    return split


def peak_memory_mib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def time_xtb(atoms, repeats, warmup=1):
    try:
        from tblite.ase import TBLite
    except ImportError:
        return None
    times = []
    for step, moved in enumerate(geometries(atoms, repeats + warmup, seed=2)):
        moved.calc = TBLite(method="GFN2-xTB", verbosity=0)
        start = time.perf_counter()
        moved.get_potential_energy()
        moved.get_forces()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_pyscf(atoms, repeats):
    from ase_phisnet.data.reference import Theory, compute_reference

    theory = Theory(xc="pbe", basis="def2-svp")
    times = []
    for moved in geometries(atoms, repeats, seed=3):
        start = time.perf_counter()
        compute_reference(moved.numbers, moved.positions / Bohr, theory)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fit_exponent(n_atoms, seconds):
    """``k`` of ``t = c N^k`` by least squares in log-log (None with < 2 points)."""
    points = [(n, t) for n, t in zip(n_atoms, seconds) if t is not None]
    if len(points) < 2:
        return None
    n, t = np.log(np.array(points)).T
    return float(np.polyfit(n, t, 1)[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--pyscf-repeats", type=int, default=2)
    parser.add_argument("--pyscf-max-atoms", type=int, default=12,
                        help="skip PySCF above this atom count (reported as skipped)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: water and ethanol, 3 repeats, PySCF for water only")
    parser.add_argument("--molecules", nargs="+", help="a subset of the molecules, by label")
    parser.add_argument("--sap-basis", choices=SAP_BASES,
                        help="the SAP fit of the models (default: ModelConfig's); a non-default "
                             "fit writes speed_<fit>.json")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.pyscf_repeats = 2, 1
        args.pyscf_max_atoms = min(args.pyscf_max_atoms, 3)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    try:
        from pyscf import lib

        lib.num_threads(args.threads)
    except ImportError:
        pass
    os.makedirs(args.out, exist_ok=True)
    model = random_model(**({"sap_basis": args.sap_basis} if args.sap_basis else {})).to(device)
    results = {
        "machine": {"cpu_count": os.cpu_count(), "threads": args.threads,
                    "device": str(device), "processor": platform.processor(),
                    "torch": torch.__version__, "load_average": os.getloadavg()},
        "settings": {"repeats": args.repeats, "pyscf_repeats": args.pyscf_repeats,
                     "pyscf_max_atoms": args.pyscf_max_atoms, "quick": args.quick,
                     "config": model.config.to_dict(),
                     "parameters": sum(p.numel() for p in model.parameters())},
        "molecules": {},
    }
    for label, atoms in molecules(args.quick, args.molecules).items():
        entry = {"formula": atoms.get_chemical_formula(), "n_atoms": len(atoms)}
        for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
            model.to(dtype)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            # fewer repeats for big molecules (each call is long, the median is stable)
            repeats = args.repeats if len(atoms) <= 20 else max(3, args.repeats // 4)
            warmup = 1 if args.quick else 3
            entry[f"ours_{name}_net_s"] = time_calculator(model, atoms, device, name,
                                                          repeats, warmup)
            entry[f"split_{name}_net_s"] = time_split(model, atoms, device, repeats, warmup)
            entry[f"peak_memory_{name}_mib"] = peak_memory_mib(device)
        split = entry["split_float64_net_s"]
        split["calculator_overhead"] = entry["ours_float64_net_s"] - sum(
            split[key] for key in ("model_forward", "eigensolver_energy", "backward"))
        entry["xtb_gfn2_s"] = time_xtb(atoms, 2 if args.quick else max(3, args.repeats // 4))
        if len(atoms) <= args.pyscf_max_atoms:
            entry["pyscf_pbe_def2svp_s"] = time_pyscf(atoms, args.pyscf_repeats)
        else:
            entry["pyscf_pbe_def2svp_s"] = None
            entry["pyscf_skipped"] = f"more than --pyscf-max-atoms {args.pyscf_max_atoms} atoms"
        ours = entry["ours_float64_net_s"]
        best = min(ours, entry["ours_float32_net_s"])
        if entry["pyscf_pbe_def2svp_s"]:
            entry["pyscf_over_ours_float64"] = entry["pyscf_pbe_def2svp_s"] / ours
            entry["pyscf_over_ours_best"] = entry["pyscf_pbe_def2svp_s"] / best
        if entry["xtb_gfn2_s"]:
            entry["ours_float64_over_xtb"] = ours / entry["xtb_gfn2_s"]
            entry["ours_best_over_xtb"] = best / entry["xtb_gfn2_s"]
        results["molecules"][label] = entry
        print_entry(label, entry)
    mols = results["molecules"].values()
    n = [m["n_atoms"] for m in mols]
    results["scaling_exponent"] = {
        key: fit_exponent(n, [m[key] for m in mols])
        for key in ("ours_float64_net_s", "ours_float32_net_s", "xtb_gfn2_s",
                    "pyscf_pbe_def2svp_s")}
    print("time ~ N_atoms^k:", {k: None if v is None else round(v, 2)
                                for k, v in results["scaling_exponent"].items()})
    stem = "speed_quick" if args.quick else "speed"
    if model.config.sap_basis != ModelConfig.sap_basis:
        stem += f"_{model.config.sap_basis}"
    with open(os.path.join(args.out, stem + ".json"), "w") as handle:
        json.dump(results, handle, indent=2)
    plot(results, os.path.join(args.out, stem + ".png"))
    return results


def print_entry(label, e):
    ms = lambda s: "   -   " if s is None else f"{1000 * s:7.1f}"  # noqa: E731
    split = e["split_float64_net_s"]
    print(f"{label:10s} {e['n_atoms']:3d} atoms | ours f64 {ms(e['ours_float64_net_s'])} ms, "
          f"f32-net {ms(e['ours_float32_net_s'])} ms | xtb {ms(e['xtb_gfn2_s'])} ms | "
          f"PySCF {ms(e['pyscf_pbe_def2svp_s'])} ms"
          + (f" ({e['pyscf_skipped']})" if "pyscf_skipped" in e else "")
          + " | split f64: " + ", ".join(f"{k} {1000 * v:.1f}" for k, v in split.items()
                                         if k not in ("model_forward", "backward"))
          + f" ms | peak RSS {e['peak_memory_float64_mib']:.0f} MiB")
    ratios = {k: round(v, 1) for k, v in e.items() if "_over_" in k}
    if ratios:
        print(" " * 11, ratios)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mols = list(results["molecules"].values())
    n = [m["n_atoms"] for m in mols]
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for key, label, style in (("ours_float64_net_s", "PhiSNet (float64)", "o-"),
                              ("ours_float32_net_s", "PhiSNet (float32 net)", "s-"),
                              ("xtb_gfn2_s", "GFN2-xTB (tblite)", "^-"),
                              ("pyscf_pbe_def2svp_s", "PySCF PBE/def2-SVP", "D-")):
        points = [(x, 1000 * m[key]) for x, m in zip(n, mols) if m.get(key)]
        if points:
            k = results["scaling_exponent"].get(key)
            axis.plot(*zip(*points), style,
                      label=label + (f"  (~N^{k:.1f})" if k is not None else ""))
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("atoms")
    axis.set_ylabel("energy + forces per call (ms)")
    machine = results["machine"]
    axis.set_title(f"{machine['device']}, {machine['threads']} threads", fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
