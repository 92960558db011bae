"""What the md_examples scripts share and the package does not provide: their common
command-line options, BFGS with timing, the frequency comparison plot and the results file.

Not a script: ``python md_examples/x.py`` puts this folder on ``sys.path``, so the scripts
import it as ``_common``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from ase.calculators.calculator import CalculatorSetupError
from ase.optimize import BFGS

from ase_phisnet.core.errors import PhiSNetError


def argument_parser(doc: str, molecule: str = "H2O") -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``doc``, with --molecule and --model."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--molecule", default=molecule,
                        help="ASE molecule name or structure file")
    parser.add_argument("--model", default=None,
                        help="shipped potential name or model file (default: the shipped "
                        "potential of --molecule)")
    return parser


def add_bfgs_arguments(parser: argparse.ArgumentParser, fmax: float, before: str = "") -> None:
    """--fmax (default ``fmax``) and --max-steps (default 300) of :func:`relax`; ``before``: what
    the minimization comes before, for the help text."""
    parser.add_argument("--fmax", type=float, default=fmax,
                        help=f"BFGS force threshold{' before ' + before if before else ''} (eV/Å)")
    parser.add_argument("--max-steps", type=int, default=300, help="BFGS step limit")


def parse_args(parser: argparse.ArgumentParser, argv, script: str) -> argparse.Namespace:
    """Add --out (default ``md_examples/results/<script name>``) last, parse ``argv`` and make
    the output folder."""
    script = Path(script).resolve()
    parser.add_argument("--out", type=Path, default=script.parent / "results" / script.stem,
                        help="output folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def settings(args: argparse.Namespace) -> dict:
    """The options as JSON values (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def write_results(results: dict, out: Path) -> None:
    with open(out / "results.json", "w") as handle:
        json.dump(results, handle, indent=2)


def relax(atoms, calculator, fmax: float, max_steps: int, history: bool = False) -> dict:
    """BFGS of ``atoms`` in place; returns the number of steps, convergence and wall time, and
    with ``history`` the energy and largest force of every step."""
    atoms.calc = calculator
    optimizer = BFGS(atoms, logfile=None)
    record = {"energy_ev": [], "fmax_ev_per_ang": []}
    if history:
        def append():
            record["energy_ev"].append(float(atoms.get_potential_energy()))
            record["fmax_ev_per_ang"].append(
                float(np.linalg.norm(atoms.get_forces(), axis=1).max()))

        optimizer.attach(append, interval=1)
    start = time.perf_counter()
    converged = bool(optimizer.run(fmax=fmax, steps=max_steps))
    return {"steps": optimizer.nsteps, "converged": converged,
            "wall_time_s": time.perf_counter() - start, **(record if history else {})}


def frequencies_cm(data) -> np.ndarray:
    """All 3N frequencies (cm^-1, ascending) of an ``ase.vibrations.VibrationsData``, an
    imaginary one as a negative number."""
    frequencies = data.get_frequencies()
    return np.where(frequencies.imag != 0, -np.abs(frequencies.imag), frequencies.real)


def plot_frequencies(frequencies: dict, path: Path, title: str) -> None:
    """Top: frequency per mode for each method; bottom: differences to the analytic Hessian."""
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    modes = np.arange(1, len(frequencies["analytic Hessian"]) + 1)
    styles = {name: (f"C{i}", marker) for i, (name, marker) in enumerate(zip(frequencies, "os^"))}
    for name, values in frequencies.items():
        color, marker = styles[name]
        top.plot(modes, values, marker, color=color, mfc="none", label=name)
        if name != "analytic Hessian":
            bottom.plot(modes, np.asarray(values) - frequencies["analytic Hessian"],
                        marker + "-", color=color, mfc="none", label=f"{name} - analytic")
    top.set_ylabel("frequency (cm$^{-1}$)")
    top.legend()
    top.set_title(title)
    bottom.axhline(0, color="k", lw=0.8)
    bottom.set_xticks(modes)
    bottom.set_xlabel("mode")
    bottom.set_ylabel("difference (cm$^{-1}$)")
    bottom.legend()
    save_figure(figure, path)


def save_figure(figure, path: Path) -> None:
    """Lay out, write (120 dpi) and close ``figure``."""
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run(main) -> None:
    """Call ``main()`` as a script: a setup error (a missing potential, an unknown molecule)
    ends it with one line, no traceback."""
    try:
        main()
    except (CalculatorSetupError, PhiSNetError) as error:
        sys.exit(f"error: {error}")
