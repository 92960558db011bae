"""One potential per molecule, side by side with what users would pick instead.

On the potential's test split and on a held-out set generated with another seed (never trained
on), in one run:

- the potential: frozen PBE-faithful matrices, energy from a message-passing remainder on the
  geometry and the electronic atom features (``configs/*_energy.yaml``);
- the same remainder trained on energies and forces alone, no electronic input (a plain MLIP,
  ``benchmarks/one_potential/water_mlip.yaml``), in the same CPU budget;
- sGDML (``pip install -e ".[sgdml]"``) trained here on exactly the potential's training
  geometries (the main file's training split and those of its extra files: for water 800
  thermal and 240 bond-stretched; for ethanol ~1,150, which needs ~8 GB for the kernel), its
  kernel width chosen on the thermal validation split.

Each: energy MAE, force MAE (per component), the largest per-atom force error (norm of the
error vector), on the test split, the held-out set and the extra files' test records (far from
equilibrium), and the energy+forces call time (median, one thread). For the potential also:
its H and occupied orbital-energy errors against PBE, how much of its force flows through the
electronic features (RMS next to the remainder's direct geometric force), and for each
candidate electronic term (``Tr[P H]``, PhiSNet's ``E_nuc + 1/2 Tr[P (H_core + H)]``) the
spread of its error (predicted against reference matrices) next to the total energy's spread:
an electronic term is only worth adding to the energy when that ratio is well below one. And
how far its electronic features lie from the same features of the reference matrices, in
training spreads, with the share of held-out geometries where one is saturated (beyond the
range the remainder takes unchanged).

Reproduce (water; ~3 CPU-hours in all):

    ase-phisnet generate --molecule H2O --n 1000 --xc pbe --basis def2-svp --temperature 300 500 \\
        --workers 2 --seed 0 --out data/water_pbe_def2svp.h5
    ase-phisnet generate --molecule H2O --n 300 --xc pbe --basis def2-svp --temperature 300 500 \\
        --bond-stretch 0.8 1.6 --workers 2 --seed 2 --out data/water_pbe_def2svp_stretched.h5
    ase-phisnet generate --molecule H2O --n 200 --xc pbe --basis def2-svp --temperature 500 \\
        --workers 2 --seed 1 --out data/water_pbe_def2svp_500k_seed1.h5
    OMP_NUM_THREADS=1 ase-phisnet train configs/water_pbe_def2svp_matrices.yaml
    OMP_NUM_THREADS=1 ase-phisnet train configs/water_pbe_def2svp_energy.yaml
    OMP_NUM_THREADS=1 ase-phisnet train benchmarks/one_potential/water_mlip.yaml
    OMP_NUM_THREADS=1 ase-phisnet train benchmarks/one_potential/water_band_structure.yaml
    OMP_NUM_THREADS=1 python benchmarks/one_potential.py \\
        --potential runs/water_pbe_def2svp_energy/best_model.pt \\
        --mlip runs/water_pbe_def2svp_mlip/best_model.pt \\
        --variant band_structure=runs/water_pbe_def2svp_band_structure/best_model.pt \\
        --heldout data/water_pbe_def2svp_500k_seed1.h5 --out benchmarks/results/one_potential/water

Ethanol the same way, with ``configs/ethanol_pbe_def2svp_{matrices,orbitals,energy}.yaml``,
``benchmarks/one_potential/ethanol_mlip.yaml`` and the data commands in their headers (held-out:
``--n 100 --temperature 500 --seed 1 --out data/ethanol_pbe_def2svp_500k_seed1.h5``).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from ase.units import Bohr, Hartree

from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.electronic.eigensolver import solve_closed_shell
from ase_phisnet.electronic.energy import (
    band_energy_eh,
    band_structure_energy_eh,
    n_occupied_orbitals,
    nuclear_repulsion_eh,
)
from ase_phisnet.electronic.model import predict_energies_forces
from ase_phisnet.electronic.model_file import load_model_file
from ase_phisnet.training.data import recorded_split
from ase_phisnet.training.energy_stage import cache_electronic
from ase_phisnet.training.evaluate import evaluate_model

MEV = 1000 * Hartree  # Eh -> meV
MEV_PER_ANG = 1000 * Hartree / Bohr  # Eh/Bohr -> meV/Å


def records_of(dataset: HamiltonianDataset, positions) -> dict[str, np.ndarray]:
    records = [dataset[int(p)] for p in positions]
    return {"z": records[0].atomic_numbers,
            "positions_bohr": np.stack([r.positions_bohr for r in records]),
            "energy_eh": np.array([r.energy_eh for r in records]),
            "forces": np.stack([r.forces_eh_per_bohr for r in records]),
            "hamiltonian": np.stack([r.hamiltonian_eh for r in records]),
            "overlap": np.stack([r.overlap for r in records]),
            "core_hamiltonian": np.stack([r.core_hamiltonian_eh for r in records])}


def concatenated(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Records of several files of the same molecule (same atoms in the same order) as one set."""
    if any(not np.array_equal(part["z"], parts[0]["z"]) for part in parts):
        raise ValueError("the data files hold different molecules or atom orders")
    return {key: parts[0][key] if key == "z" else np.concatenate([p[key] for p in parts])
            for key in parts[0]}


def extra_splits(record: dict) -> list[tuple[HamiltonianDataset, object]]:
    """The training's extra data files (stretched bonds, active-learning frames) with their
    splits, as the model file records them."""
    extras = []
    for index, extra in enumerate(record.get("extra_data", [])):
        path = extra["dataset"]
        if not os.path.exists(path):
            path = record["config"]["extra_data"][index]["dataset"]
        data = HamiltonianDataset(path)
        extras.append((data, recorded_split(data, extra["split"])))
    return extras


def errors(energy_eh, forces, data) -> dict[str, float]:
    """Energy MAE (meV), force MAE per component and largest per-atom error norm (meV/Å)."""
    force_error = forces - data["forces"]
    return {"energy_mae_mev": float(np.abs(energy_eh - data["energy_eh"]).mean() * MEV),
            "forces_mae_mev_per_ang": float(np.abs(force_error).mean() * MEV_PER_ANG),
            "forces_max_atom_error_mev_per_ang":
                float(np.linalg.norm(force_error, axis=-1).max() * MEV_PER_ANG)}


def median_call_ms(function, repeats: int = 30) -> float:
    function()  # warm-up: caches, allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def model_entry(model, sets) -> dict:
    z = torch.as_tensor(sets["test"]["z"])
    entry = {}
    for name, data in sets.items():
        energy, forces = predict_energies_forces(model, z, data["positions_bohr"])
        entry[name] = errors(energy, forces, data)
    return entry


def potential_call_ms(model, z, positions_bohr) -> float:
    from ase_phisnet.electronic.model import energy_and_forces

    xyz = torch.as_tensor(positions_bohr, dtype=torch.float64)
    return median_call_ms(lambda: energy_and_forces(model, z, xyz))


def mlip_call_ms(model, z, positions_bohr) -> float:
    """The plain MLIP's remainder alone: energy and forces, no matrices."""
    xyz = torch.as_tensor(positions_bohr, dtype=torch.float64)

    def call():
        positions = xyz.clone().requires_grad_(True)
        energy = model.remainder_energy(z, positions, None)
        torch.autograd.grad(energy, positions)

    return median_call_ms(call)


def force_decomposition(model, data) -> dict[str, float]:
    """RMS (meV/Å) of the force through the electronic features, the remainder's direct
    geometric force and the fixed electronic term's, over ``data``."""
    z = torch.as_tensor(data["z"])
    positions = torch.as_tensor(data["positions_bohr"], dtype=torch.float64)
    cached = cache_electronic(model, z, positions)
    x = None if cached.features is None else cached.features.clone().requires_grad_(True)
    positions = positions.clone().requires_grad_(True)
    energy = model.remainder(model.species(z), positions, x)
    inputs = [positions] + ([x] if x is not None else [])
    gradients = torch.autograd.grad(energy.sum(), inputs)
    rms = {"electronic_term": cached.forces_eh_per_bohr, "remainder_geometry": -gradients[0]}
    if x is not None:
        rms["remainder_through_features"] = -torch.einsum("bax,baxcd->bcd", gradients[1],
                                                          cached.jacobian)
    return {f"rms_{k}_mev_per_ang": float(v.pow(2).mean().sqrt()) * MEV_PER_ANG
            for k, v in rms.items()}


def electronic_term_noise(model, data, n_occupied) -> dict:
    """For each candidate electronic term: std (meV) over ``data`` of (predicted - reference)
    and of the reference term, against the std of the total energy, and their correlation."""
    z = torch.as_tensor(data["z"])
    positions = torch.as_tensor(data["positions_bohr"], dtype=torch.float64)
    with torch.no_grad():
        out = model.double()(z, positions)
        predicted = solve_closed_shell(out["hamiltonian"], out["overlap"], n_occupied)
        reference = solve_closed_shell(torch.as_tensor(data["hamiltonian"]),
                                       torch.as_tensor(data["overlap"]), n_occupied)
    h_ref = torch.as_tensor(data["hamiltonian"])
    hcore_ref = torch.as_tensor(data["core_hamiltonian"])
    nuclear = nuclear_repulsion_eh(z, positions)
    terms = {
        "band_structure": (band_structure_energy_eh(predicted, out["hamiltonian"]),
                           band_structure_energy_eh(reference, h_ref)),
        "phisnet": (nuclear + band_energy_eh(predicted, out["hamiltonian"],
                                             out["core_hamiltonian"]),
                    nuclear + band_energy_eh(reference, h_ref, hcore_ref)),
    }
    total_std = float(np.std(data["energy_eh"])) * MEV
    result = {"total_energy_std_mev": total_std}
    for name, (pred, ref) in terms.items():
        pred, ref = pred.numpy(), ref.numpy()
        error_std = float(np.std(pred - ref)) * MEV
        result[name] = {"error_std_mev": error_std, "reference_std_mev": float(np.std(ref)) * MEV,
                        "error_over_total_std": error_std / total_std,
                        "correlation_with_total": float(np.corrcoef(ref, data["energy_eh"])[0, 1])}
    return result


def electronic_feature_noise(model, data, n_occupied) -> dict:
    """How far the potential's electronic features (from its predicted matrices) lie from the
    same features of the reference matrices, per element and feature: the std and mean of the
    difference in training spreads of the feature (the remainder's standardization), and the
    share of geometries with a feature beyond the range the remainder takes unchanged."""
    from ase.data import chemical_symbols

    from ase_phisnet.electronic.features import FEATURE_NAMES

    z = torch.as_tensor(data["z"])
    positions = torch.as_tensor(data["positions_bohr"], dtype=torch.float64)
    overlap = torch.as_tensor(data["overlap"])
    remainder, species = model.remainder, model.species(z)
    with torch.no_grad():
        out = model.double()(z, positions)
        predicted = solve_closed_shell(out["hamiltonian"], out["overlap"], n_occupied,
                                       derivative_order=1)
        reference = solve_closed_shell(torch.as_tensor(data["hamiltonian"]), overlap,
                                       n_occupied, derivative_order=1)
        x_predicted = model.electronic_features(z, predicted, out["overlap"])
        difference = (remainder.standardized_features(species, x_predicted)
                      - remainder.standardized_features(
                          species, model.electronic_features(z, reference, overlap)))
        saturated = remainder.feature_excursions(species, x_predicted).amax((-1, -2)) > 0
    result = {"share_of_geometries_with_a_saturated_feature": float(saturated.double().mean())}
    for element in species.unique().tolist():
        atoms = species == element
        symbol = chemical_symbols[int(z[atoms][0])]
        result[symbol] = {name: {"std_spreads": float(difference[:, atoms, k].std()),
                                 "mean_spreads": float(difference[:, atoms, k].mean())}
                          for k, name in enumerate(FEATURE_NAMES)
                          if bool(x_predicted[:, atoms, k].any())}  # not a shell it lacks
    return result


def train_sgdml(train, validation, sigmas=(10, 20, 30, 50, 70)) -> tuple[dict, dict]:
    """sGDML on exactly the training geometries (eV, Å), kernel width by validation force MAE;
    returns the chosen model and a record of the search (CPU seconds included)."""
    from sgdml.predict import GDMLPredict
    from sgdml.train import GDMLTrain
    from sgdml.utils import io

    def dataset(data, name):
        # sGDML reads its data sets from .npz files: every field a NumPy array
        values = {"type": np.array("d"), "code_version": np.array("1.0.3"),
                  "name": np.array(name), "theory": np.array("PBE/def2-SVP"),
                  "z": data["z"], "R": data["positions_bohr"] * Bohr,
                  "E": data["energy_eh"] * Hartree, "F": data["forces"] * Hartree / Bohr,
                  "e_unit": np.array("eV"), "r_unit": np.array("Ang")}
        values["md5"] = io.dataset_md5(values)
        return values

    train_set, valid_set = dataset(train, "train"), dataset(validation, "validation")
    trainer = GDMLTrain(max_processes=1)
    search, best = [], None
    start = time.process_time()
    for sigma in sigmas:
        task = trainer.create_task(train_set, len(train["energy_eh"]), valid_set,
                                   len(validation["energy_eh"]), sig=sigma)
        model = trainer.train(task)
        _, forces = GDMLPredict(model, max_processes=1).predict(
            valid_set["R"].reshape(len(valid_set["R"]), -1))
        mae = float(np.abs(forces.reshape(valid_set["F"].shape) - valid_set["F"]).mean()) * 1000
        search.append({"sigma": sigma, "validation_forces_mae_mev_per_ang": mae})
        if best is None or mae < best[0]:
            best = (mae, model)
    return best[1], {"search": search, "cpu_seconds": time.process_time() - start}


def sgdml_entry(model, sets) -> dict:
    from sgdml.predict import GDMLPredict

    predictor = GDMLPredict(model, max_processes=1)
    entry = {}
    for name, data in sets.items():
        energy, forces = predictor.predict((data["positions_bohr"] * Bohr).reshape(
            len(data["energy_eh"]), -1))
        entry[name] = errors(energy / Hartree, forces.reshape(data["forces"].shape)
                             / (Hartree / Bohr), data)
    one = (sets["test"]["positions_bohr"][:1] * Bohr).reshape(1, -1)
    entry["call_ms"] = median_call_ms(lambda: predictor.predict(one))
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--potential", required=True, help="the one-potential model file")
    parser.add_argument("--mlip", help="the plain-MLIP model file (same remainder, E/F only)")
    parser.add_argument("--heldout", required=True, help="held-out data file (another seed)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=MODEL",
                        help="a further potential evaluated like --potential (repeatable)")
    parser.add_argument("--no-sgdml", action="store_true")
    parser.add_argument("--sgdml-sigmas", type=int, nargs="+", default=[10, 20, 30, 50, 70],
                        help="sGDML kernel widths to choose from on the validation split (each "
                             "is one training; the cost grows as n_train^3)")
    parser.add_argument("--out", required=True, help="output stem: OUT.json and OUT.png")
    args = parser.parse_args()
    torch.set_num_threads(1)

    potential, meta = load_model_file(args.potential)
    potential = potential.double()
    record = meta["training"]
    dataset = HamiltonianDataset(record["dataset"] if os.path.exists(record["dataset"])
                                 else record["config"]["dataset"])
    split = recorded_split(dataset, record["split"])
    heldout = HamiltonianDataset(args.heldout)
    sets = {"test": records_of(dataset, split.test),
            "heldout": records_of(heldout, range(len(heldout)))}
    extras = extra_splits(record)
    extra_tests = [records_of(data, part.test) for data, part in extras if len(part.test)]
    if extra_tests:  # the extra files' test records: how each model does off the thermal data
        sets["extra_test"] = concatenated(extra_tests)
    z = torch.as_tensor(sets["test"]["z"])
    n_occupied = n_occupied_orbitals(z, 0)
    one = sets["test"]["positions_bohr"][0]

    results = {"potential": args.potential, "heldout": args.heldout,
               "n_geometries": {k: len(v["energy_eh"]) for k, v in sets.items()}}
    entry = model_entry(potential, sets)
    entry["call_ms"] = potential_call_ms(potential, z, one)
    for name, positions in (("test", split.test), ("heldout", range(len(heldout)))):
        metrics = evaluate_model(potential, dataset if name == "test" else heldout, positions,
                                 energies=False)
        entry[name].update(hamiltonian_mae_ueh=metrics.hamiltonian_mae_ueh,
                           occupied_energy_mae_ueh=metrics.occupied_energy_mae_ueh)
    entry["force_decomposition_heldout"] = force_decomposition(potential, sets["heldout"])
    entry["train_cpu_minutes"] = record.get("train_time_s", 0) / 60
    results["one_potential"] = entry
    results["electronic_term_noise_heldout"] = electronic_term_noise(potential, sets["heldout"],
                                                                     n_occupied)
    if potential.config.electronic_features:
        results["electronic_feature_noise_heldout"] = electronic_feature_noise(
            potential, sets["heldout"], n_occupied)
    for variant in args.variant:
        name, _, path = variant.partition("=")
        model, variant_meta = load_model_file(path)
        model = model.double()
        results[name] = {**model_entry(model, sets), "call_ms": potential_call_ms(model, z, one),
                         "force_decomposition_heldout": force_decomposition(model,
                                                                            sets["heldout"]),
                         "train_cpu_minutes": variant_meta["training"]["train_time_s"] / 60}
    if args.mlip:
        mlip, mlip_meta = load_model_file(args.mlip)
        mlip = mlip.double()
        results["plain_mlip"] = {**model_entry(mlip, sets),
                                 "call_ms": mlip_call_ms(mlip, z, one),
                                 "train_cpu_minutes": mlip_meta["training"]["train_time_s"] / 60}
    if not args.no_sgdml:
        # the potential's training geometries: the main file's and the extra files'
        train = concatenated([records_of(dataset, split.train)]
                             + [records_of(data, part.train) for data, part in extras
                                if len(part.train)])
        validation = records_of(dataset, split.validation)
        model, search = train_sgdml(train, validation, tuple(args.sgdml_sigmas))
        results["sgdml"] = {**sgdml_entry(model, sets), **search}
    for data in [dataset, heldout] + [data for data, _ in extras]:
        data.close()

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as handle:
        json.dump(results, handle, indent=1)
    plot(results, args.out + ".png")
    print(table(results))


def model_names(results: dict) -> list[str]:
    """The compared models of ``results``, the potential first."""
    return [name for name, value in results.items()
            if isinstance(value, dict) and "heldout" in value and "call_ms" in value]


def table(results: dict) -> str:
    extra = "extra_test" in results["n_geometries"]
    header = ("| model | E MAE test / held-out (meV) | F MAE test / held-out (meV/Å) | "
              "largest atom F error held-out (meV/Å) | "
              + ("F MAE / largest, extra files' test (meV/Å) | " if extra else "")
              + "call (ms) |")
    rows = [header, "|---" * (6 if extra else 5) + "|"]
    for name in model_names(results):
        r = results[name]
        row = (f"| {name} | {r['test']['energy_mae_mev']:.2f} / "
               f"{r['heldout']['energy_mae_mev']:.2f} | "
               f"{r['test']['forces_mae_mev_per_ang']:.1f} / "
               f"{r['heldout']['forces_mae_mev_per_ang']:.1f} | "
               f"{r['heldout']['forces_max_atom_error_mev_per_ang']:.0f} | ")
        if extra:
            row += (f"{r['extra_test']['forces_mae_mev_per_ang']:.1f} / "
                    f"{r['extra_test']['forces_max_atom_error_mev_per_ang']:.0f} | ")
        rows.append(row + f"{r['call_ms']:.1f} |")
    return "\n".join(rows)


def plot(results: dict, path: str) -> None:
    """Energy and force MAE of each model on each set (log scale: they span decades)."""
    import matplotlib.pyplot as plt

    names = model_names(results)
    sets = [s for s in ("test", "heldout", "extra_test") if s in results["n_geometries"]]
    width = 0.8 / len(sets)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, key, label in ((axes[0], "energy_mae_mev", "energy MAE (meV)"),
                             (axes[1], "forces_mae_mev_per_ang", "force MAE (meV/Å)")):
        for index, split in enumerate(sets):
            offset = (index - (len(sets) - 1) / 2) * width
            axis.bar(np.arange(len(names)) + offset, [results[n][split][key] for n in names],
                     width=width, label=f"{split} ({results['n_geometries'][split]})")
        axis.set_xticks(range(len(names)), [n.replace("_", " ") for n in names],
                        rotation=15)
        axis.set_yscale("log")
        axis.set_ylabel(label)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
