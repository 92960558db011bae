"""Energy+forces call time of the calculator, variants interleaved, for machines whose speed drifts.

On a shared or virtual 2-core machine the same call can take 30 % longer an hour later, so two
``speed.py`` runs made apart cannot tell a 1.25x change from the drift. This script runs each
variant in turn in its own process, for several rounds, and reports every round's median: a
change shows as a gap that holds in every round.

A variant is ``LABEL=SAP_FIT[@SOURCE_TREE]``: a random-weight default model (``ModelConfig``,
elements H, C, N, O) with ``sap_basis`` SAP_FIT, imported from SOURCE_TREE (a checkout of another
commit, e.g. made with ``git worktree add /tmp/before <commit>``) or from this tree. Each process
times ``--calls`` energy+forces calls on geometries displaced by 0.01 Å (median after 3 warm-up
calls).

    git worktree add /tmp/before <commit before the change>
    python benchmarks/interleaved_calls.py --molecules CH3CH2OH C6H6 H2O --threads 2 \\
        --variants before=sapgrasplarge@/tmp/before large=sapgrasplarge compact=sapcompact

Writes ``interleaved_calls.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

#: What one process runs: time the calculator on one molecule, print the median in ms.
_TIMER = """
import sys, time
import numpy as np, torch
from ase.build import molecule
from ase_phisnet import PhiSNetCalculator
from ase_phisnet.electronic.model import ModelConfig, PhiSNetModel
name, threads, sap_basis, calls = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = PhiSNetModel(ModelConfig(elements=("H", "C", "N", "O"), sap_basis=sap_basis)).double()
calculator = PhiSNetCalculator(model=model)
atoms, rng, times = molecule(name), np.random.default_rng(0), []
for _ in range(calls + 3):
    moved = atoms.copy()
    moved.positions += rng.normal(0.0, 0.01, moved.positions.shape)
    moved.calc = calculator
    start = time.perf_counter()
    moved.get_forces()
    times.append(time.perf_counter() - start)
print(1000 * float(np.median(times[3:])))
"""


def parse_variant(text: str) -> tuple[str, str, str | None]:
    """``LABEL=SAP_FIT[@SOURCE_TREE]`` -> (label, sap_fit, source tree or None)."""
    label, _, rest = text.partition("=")
    fit, _, tree = rest.partition("@")
    if not label or not fit:
        raise SystemExit(f"--variants: {text!r} is not LABEL=SAP_FIT[@SOURCE_TREE]")
    return label, fit, tree or None


def time_variant(molecule: str, threads: int, fit: str, tree: str | None, calls: int) -> float:
    """Median ms of one process of ``_TIMER``; ``tree`` goes first on its PYTHONPATH."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if tree:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", _TIMER, molecule, str(threads), fit, str(calls)],
                          env=env, cwd=tree or None, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--molecules", nargs="+", default=["CH3CH2OH"],
                        help="ASE molecule names (ase.build.molecule)")
    parser.add_argument("--variants", nargs="+", required=True,
                        help="LABEL=SAP_FIT[@SOURCE_TREE], e.g. compact=sapcompact")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in args.variants]
    results = {"threads": args.threads, "calls": args.calls,
               "load_average": list(os.getloadavg()), "median_ms": {}}
    for molecule in args.molecules:
        table = results["median_ms"][molecule] = {label: [] for label, _, _ in variants}
        for round_ in range(args.rounds):
            for label, fit, tree in variants:
                table[label].append(time_variant(molecule, args.threads, fit, tree, args.calls))
            print(f"{molecule} round {round_ + 1}: " + ", ".join(
                f"{label} {table[label][-1]:.1f} ms" for label, _, _ in variants), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "interleaved_calls.json"), "w") as handle:
        json.dump(results, handle, indent=1)
    return results


if __name__ == "__main__":
    main()
