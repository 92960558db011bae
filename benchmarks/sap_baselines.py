"""What each Gaussian-charge fit of the SAP baseline leaves for the network, and what it costs.

The default network learns ``ΔH = H - H_core - V_SAP`` (PBE's Kohn–Sham matrix minus the exact
core Hamiltonian and the superposition of atomic potentials), and every energy+forces call
evaluates ``V_SAP`` and its first derivative exactly. Both depend on the fit of each atom's
potential by Gaussian charges (``ModelConfig.sap_basis``): more Gaussians follow the atomic
potential more closely, and each costs about one point nucleus's worth of three-centre
integrals per AO pair. For each fit of :data:`~ase_phisnet.core.sap.SAP_BASES`, on the records
of a data set:

- the target's size: the largest ``|ΔH_μν|`` and the mean ``|ΔH_μν|`` (Eh);
- its spread over geometries: the standard deviation of each element ``ΔH_μν`` over the
  records, averaged over the elements (Eh). The network learns this variation; the
  geometry-independent mean is the easy part;
- the time of ``V_SAP`` and of its first derivative (``int3c2e`` and ``int3c2e_ip1``) at one
  geometry on ``--threads`` threads (median of ``--repeats``), next to the overlap and core
  Hamiltonian's, which every fit pays alike.

For context the same statistics are given for ``H`` itself and ``H - H_core`` (rows ``H`` and
``core``). Whether a cheaper fit keeps the accuracy per CPU-hour is for the learning curves
(``benchmarks/learning_curves/water_default_sapcompact.yaml``) to say.

    python benchmarks/sap_baselines.py --data data/water_pbe_def2svp.h5 \\
        data/ethanol_pbe_def2svp.h5 --n 200 --threads 1 --out benchmarks/results

Writes ``sap_baselines.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch
from pyscf import lib

from ase_phisnet.core.core_hamiltonian import CoreHamiltonianIntegrals
from ase_phisnet.core.integrals import OverlapIntegrals
from ase_phisnet.core.sap import SAP_BASES, SAPIntegrals, load_sap_basis
from ase_phisnet.data.dataset import HamiltonianDataset


def target_statistics(targets: np.ndarray) -> dict:
    """Size and spread (Eh) of targets ``(N, nao, nao)`` over the N geometries."""
    return {"largest_abs_eh": float(np.abs(targets).max()),
            "mean_abs_eh": float(np.abs(targets).mean()),
            "mean_spread_eh": float(targets.std(axis=0).mean())}


def median_ms(function, repeats: int) -> float:
    """Median wall time of ``function()`` in ms after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(path: str, n_records: int, repeats: int) -> dict:
    """Every SAP fit's target statistics and integral times on the first ``n_records`` of
    ``path`` (in the data set's own basis)."""
    dataset = HamiltonianDataset(path)
    basis = dataset.metadata.theory.basis
    records = [dataset[i] for i in range(min(n_records, len(dataset)))]
    numbers = records[0].atomic_numbers
    positions = [r.positions_bohr for r in records]
    hamiltonians = np.stack([r.hamiltonian_eh for r in records])
    core = CoreHamiltonianIntegrals(numbers, basis)
    without_core = hamiltonians - np.stack([core.value(p) for p in positions])
    symbols = sorted({core.mol.atom_symbol(i) for i in range(len(numbers))})
    overlap = OverlapIntegrals(numbers, basis)
    result = {
        "data": path, "basis": basis, "n_records": len(records),
        "atomic_numbers": numbers.tolist(),
        "targets": {"H": target_statistics(hamiltonians), "core": target_statistics(without_core)},
        "times_ms": {
            "overlap": {"value": median_ms(lambda: overlap.value(positions[0]), repeats),
                        "first": median_ms(lambda: overlap.first(positions[0]), repeats)},
            "core": {"value": median_ms(lambda: core.value(positions[0]), repeats),
                     "first": median_ms(lambda: core.first(positions[0]), repeats)}},
        "n_gaussians": {},
    }
    for sap_basis in SAP_BASES:
        sap = SAPIntegrals(numbers, basis, sap_basis)
        delta = without_core - np.stack([sap.value(p) for p in positions])
        result["targets"][sap_basis] = target_statistics(delta)
        result["times_ms"][sap_basis] = {
            "value": median_ms(lambda: sap.value(positions[0]), repeats),
            "first": median_ms(lambda: sap.first(positions[0]), repeats)}
        result["n_gaussians"][sap_basis] = {
            s: len(load_sap_basis(sap_basis, s)) for s in symbols}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--n", type=int, default=200, help="records per data set")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {"threads": args.threads, "load_average": list(os.getloadavg()), "data": []}
    with lib.with_omp_threads(args.threads):
        for path in args.data:
            results["data"].append(measure(path, args.n, args.repeats))
    for entry in results["data"]:
        print(f"\n{entry['data']} ({entry['n_records']} records)")
        print(f"{'target':>14} {'largest':>9} {'mean':>9} {'spread':>9} "
              f"{'value ms':>9} {'first ms':>9}")
        for name, stats in entry["targets"].items():
            times = entry["times_ms"].get(name, {})
            print(f"{name:>14} {stats['largest_abs_eh']:9.4f} {stats['mean_abs_eh']:9.5f} "
                  f"{stats['mean_spread_eh']:9.5f} {times.get('value', float('nan')):9.2f} "
                  f"{times.get('first', float('nan')):9.2f}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "sap_baselines.json"), "w") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
