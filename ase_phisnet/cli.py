"""The ``ase-phisnet`` command line: one subcommand per job.

    ase-phisnet generate --molecule H2O --n 100 --xc pbe --basis def2-svp --temperature 500 \\
        --out water.h5 [--workers 2]
    ase-phisnet train configs/water_example.yaml
    ase-phisnet evaluate runs/water/best_model.pt water.h5 [--json metrics.json]
    ase-phisnet potentials
    ase-phisnet md --molecule H2O --model water-pbe-def2svp --ensemble nve --steps 2000
    ase-phisnet cube --molecule H2O --orbital homo lumo --out water
    ase-phisnet explore --molecule H2O --model water-pbe-def2svp --out frames.xyz
    ase-phisnet ship configs/ship_water.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ase_phisnet.core.errors import PhiSNetError


def _add_generate(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="make (or resume) a PySCF reference dataset",
        description="Sample thermal geometries of a molecule and compute PySCF references "
        "(H, S, core H, orbital energies, energy, forces) into an HDF5 dataset. Re-running "
        "the same command on an existing file resumes it.",
    )
    parser.add_argument("--molecule", required=True, help="ASE name (H2O, CH3CH2OH) or xyz file")
    parser.add_argument("--n", type=int, required=True, help="number of geometries")
    parser.add_argument("--out", required=True, help="output HDF5 file (resumed if it exists)")
    parser.add_argument("--xc", default="pbe", help="functional, or 'hf' (default: pbe)")
    parser.add_argument("--basis", default="def2-svp", help="PySCF basis (default: def2-svp)")
    parser.add_argument("--charge", type=int, default=0, help="total charge (default: 0)")
    parser.add_argument("--grid-level", type=int, default=3, help="DFT grid level (default: 3)")
    parser.add_argument("--conv-tol", type=float, default=1e-10, help="SCF tolerance in Eh")
    parser.add_argument("--grid-response", action="store_true",
                        help="DFT forces with the grid's response to moving atoms (exactly "
                             "-dE/dR; without it ~0.1 meV/Å off for PBE/def2-SVP water)")
    parser.add_argument("--max-cycle", type=int, default=100, help="SCF iteration limit")
    parser.add_argument(
        "--temperature", type=float, nargs="+", default=[300.0],
        help="sampling temperature(s) in K; geometries are split evenly (default: 300)",
    )
    parser.add_argument("--sampler", choices=["langevin", "normal-modes", "file"],
                        default="langevin",
                        help="'file': take the geometries from --geometries (default: langevin)")
    parser.add_argument("--geometries", default=None, metavar="FILE",
                        help="structure file (any ASE format, all frames) for --sampler file, "
                        "e.g. the frames 'ase-phisnet explore' wrote")
    parser.add_argument(
        "--sampling-calculator", choices=["auto", "gfn2", "pyscf"], default="auto",
        help="cheap calculator for sampling: GFN2-xTB (tblite) if installed, else HF/STO-3G",
    )
    parser.add_argument("--stride", type=int, default=20, help="Langevin steps per snapshot")
    parser.add_argument("--equilibration-steps", type=int, default=400)
    parser.add_argument("--timestep", type=float, default=0.5, help="Langevin time step in fs")
    parser.add_argument("--quantum", action="store_true",
                        help="normal-mode sampling with zero-point spread")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="local worker processes")
    parser.add_argument(
        "--dask-scheduler", default=None,
        help="address of a Dask scheduler; its executor runs the PySCF jobs instead",
    )
    parser.add_argument(
        "--bond-stretch", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
        help="scale one bond per geometry by a factor drawn uniformly from [LOW, HIGH] "
        "(e.g. 0.85 1.45), so the data reach the walls that MD may visit",
    )
    parser.add_argument(
        "--angle-scale", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
        help="scale one bond angle per geometry by a factor drawn uniformly from [LOW, HIGH] "
        "(e.g. 0.55 1.3), so the data reach close contacts of the atoms the angle joins",
    )
    parser.add_argument(
        "--rattle", type=float, default=0.0, metavar="SIGMA",
        help="add Gaussian displacements of SIGMA Å to every coordinate (e.g. 0.1), so the "
        "data reach the bent and stretched geometries that MD may visit",
    )
    parser.add_argument("--plan-only", action="store_true",
                        help="sample and store the geometries, compute no reference; the same "
                        "command without it computes them later")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(run=_run_generate)


def _run_generate(args) -> int:
    from ase_phisnet.data.generate import generate_dataset, plan_dataset
    from ase_phisnet.data.reference import Theory
    from ase_phisnet.data.sampling import SamplerConfig

    theory = Theory(
        xc=args.xc, basis=args.basis, charge=args.charge, grid_level=args.grid_level,
        conv_tol=args.conv_tol, max_cycle=args.max_cycle, grid_response=args.grid_response,
    )
    sampler = SamplerConfig(
        kind=args.sampler, temperatures_k=tuple(args.temperature), seed=args.seed,
        calculator=args.sampling_calculator, timestep_fs=args.timestep, stride=args.stride,
        equilibration_steps=args.equilibration_steps, quantum=args.quantum,
        bond_stretch=tuple(args.bond_stretch) if args.bond_stretch else None,
        angle_scale=tuple(args.angle_scale) if args.angle_scale else None,
        rattle_ang=args.rattle, geometries_path=args.geometries,
    )
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.plan_only:
        planned = plan_dataset(args.molecule, args.n, theory, sampler, args.out,
                               progress=not args.no_progress)
        print(f"{args.out}: {len(planned)} geometries planned, no reference computed")
        return 0
    client = None
    if args.dask_scheduler:
        try:
            from distributed import Client
        except ImportError:
            raise PhiSNetError("--dask-scheduler needs dask: pip install 'ase-phisnet[dask]'")
        client = Client(args.dask_scheduler)
    try:
        summary = generate_dataset(
            args.molecule, args.n, theory, sampler, args.out, workers=args.workers,
            executor=client.get_executor() if client is not None else None,
            progress=not args.no_progress,
        )
    finally:
        if client is not None:
            client.close()
    print(
        f"{summary.path}: {summary.n_records}/{summary.n_planned} records "
        f"({summary.n_computed_this_run} computed now, {summary.n_failed} failed SCF) "
        f"in {summary.wall_time_s:.1f} s"
    )
    return 0


def _add_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model from a YAML config (resumes from its checkpoint)",
        description="Train PhiSNet as a YAML config says (see configs/water_example.yaml). "
        "Re-running resumes from OUTPUT_DIR/checkpoint.pt. Under torchrun it trains with "
        "DistributedDataParallel.")
    parser.add_argument("config", help="YAML training config")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=_run_train)


def _run_train(args) -> int:
    import os

    from ase_phisnet.training.config import TrainConfig
    from ase_phisnet.training.loop import train

    result = train(TrainConfig.from_yaml(args.config), progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"best model: {result.best_model_path} (validation loss "
          f"{result.best_validation_loss:.4g}, {result.epochs} epochs, "
          f"{result.wall_time_s:.0f} s training)")
    return 0


def _add_evaluate(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="H, S, orbital-energy and orbital metrics of a model on a dataset",
        description="Evaluate MODEL on DATASET's test split (the split recorded in the model "
        "file unless --split-seed/--n-train/--n-validation are given).")
    parser.add_argument("model", help="model file (weights; its .json beside it)")
    parser.add_argument("dataset", help="HDF5 dataset from 'ase-phisnet generate'")
    parser.add_argument("--split-seed", type=int)
    parser.add_argument("--n-train", type=int)
    parser.add_argument("--n-validation", type=int)
    parser.add_argument("--all", action="store_true", help="evaluate every record")
    parser.add_argument("--json", help="also write the metrics to this JSON file")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(args) -> int:
    import json

    import torch

    from ase_phisnet.data.dataset import HamiltonianDataset
    from ase_phisnet.electronic.model_file import load_model
    from ase_phisnet.interface.calculator import resolve_model_path
    from ase_phisnet.training.evaluate import evaluate_model, trained_test_split

    args.model = resolve_model_path(args.model)  # a file, or a shipped potential's name
    model = load_model(args.model).to(getattr(torch, args.dtype))
    dataset = HamiltonianDataset(args.dataset)
    if dataset.metadata.theory.basis != model.config.basis:
        raise ValueError(f"model basis {model.config.basis!r} != dataset basis "
                         f"{dataset.metadata.theory.basis!r}")
    if args.all:
        positions = range(len(dataset))
    elif args.split_seed is not None:
        if args.n_train is None or args.n_validation is None:
            raise ValueError("--split-seed needs --n-train and --n-validation")
        positions = dataset.split(args.split_seed, args.n_train, args.n_validation).test
    else:
        with open(args.model + ".json") as handle:
            positions = trained_test_split(json.load(handle), dataset)
    metrics = evaluate_model(model, dataset, positions)
    print(metrics.table())
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(metrics.to_json())
    return 0


def _add_potentials(subparsers) -> None:
    parser = subparsers.add_parser(
        "potentials", help="list the shipped potentials and their test metrics",
        description="List the potentials shipped with the package (usable by name as "
        "PhiSNetCalculator(model=NAME) and 'ase-phisnet md --model NAME').")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=_run_potentials)


def _run_potentials(args) -> int:
    import json

    from ase_phisnet.interface.potentials import describe_potential, list_potentials

    found = list_potentials()
    if args.json:
        print(json.dumps(found, indent=2))
    elif not found:
        print("no shipped potentials")
    else:
        print("\n\n".join(describe_potential(entry) for entry in found))
    return 0


def _add_md(subparsers) -> None:
    parser = subparsers.add_parser(
        "md", help="molecular dynamics (NVE or NVT) with a potential",
        description="Run ASE molecular dynamics with a PhiSNet potential: velocity Verlet "
        "(NVE) or Langevin (NVT) from Maxwell-Boltzmann velocities at --temperature. Writes an "
        "ASE trajectory, a log (energies, temperature, HOMO-LUMO gap per step) and a plot, and "
        "prints a summary with the energy drift.")
    parser.add_argument("--molecule", default="H2O", help="ASE name or structure file "
                        "(default: H2O)")
    parser.add_argument("--model", default="water-pbe-def2svp",
                        help="shipped potential name or model file (default: water-pbe-def2svp)")
    parser.add_argument("--ensemble", choices=["nve", "nvt"], default="nve")
    parser.add_argument("--temperature", type=float, default=300.0,
                        help="initial (and NVT thermostat) temperature in K (default: 300)")
    parser.add_argument("--timestep", type=float, default=0.5, help="fs (default: 0.5)")
    parser.add_argument("--steps", type=int, default=2000, help="MD steps (default: 2000)")
    parser.add_argument("--friction", type=float, default=0.01,
                        help="Langevin friction in 1/fs (NVT; default: 0.01)")
    parser.add_argument("--log-interval", type=int, default=1, help="steps per log row/frame")
    parser.add_argument("--charge", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="velocities and thermostat noise")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--out", default="md",
                        help="output prefix: PREFIX.traj, PREFIX.log, PREFIX.png, "
                        "PREFIX.json (default: md)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=_run_md)


def _run_md(args) -> int:
    import json

    from ase_phisnet.data.sampling import resolve_molecule
    from ase_phisnet.interface.calculator import PhiSNetCalculator
    from ase_phisnet.interface.md import MDSettings, plot_log, run_md

    settings = MDSettings(ensemble=args.ensemble, temperature_k=args.temperature,
                          timestep_fs=args.timestep, steps=args.steps,
                          friction_per_fs=args.friction, log_interval=args.log_interval,
                          seed=args.seed)
    atoms = resolve_molecule(args.molecule)
    atoms.calc = PhiSNetCalculator(model=args.model, device=args.device, dtype=args.dtype,
                                   charge=args.charge)
    summary, log = run_md(atoms, settings, trajectory_path=f"{args.out}.traj",
                          log_path=f"{args.out}.log", progress=not args.no_progress)
    plot_log(log, f"{args.out}.png", title=f"{atoms.get_chemical_formula()} "
             f"{args.ensemble.upper()}, {args.model}")
    with open(f"{args.out}.json", "w") as handle:
        json.dump({"molecule": args.molecule, "model": args.model, **summary.to_dict()}, handle,
                  indent=2)
    print(summary.text())
    print(f"wrote {args.out}.traj, {args.out}.log, {args.out}.png, {args.out}.json")
    return 0


def _add_explore(subparsers) -> None:
    parser = subparsers.add_parser(
        "explore", help="find where a potential fails: NVT runs stopped when they leave the data",
        description="Run short Langevin trajectories with a potential, each stopped when an "
        "interatomic distance leaves the data's range, the temperature runs away or the "
        "calculator fails, and write the frames before each stop to a structure file. Label "
        "them with 'ase-phisnet generate --sampler file --geometries FILE' and train on them.")
    parser.add_argument("--molecule", required=True, help="ASE name or structure file (start)")
    parser.add_argument("--model", required=True, help="shipped potential name or model file")
    parser.add_argument("--data", nargs="+", default=None, metavar="H5",
                        help="dataset file(s) whose geometries define the trusted distances "
                        "(default: the training domain recorded in the model file)")
    parser.add_argument("--out", required=True, help="structure file for the frames (.xyz)")
    parser.add_argument("--runs", type=int, default=8, help="trajectories (default: 8)")
    parser.add_argument("--steps", type=int, default=2000, help="most steps per trajectory")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (default: 300)")
    parser.add_argument("--timestep", type=float, default=0.5, help="fs (default: 0.5)")
    parser.add_argument("--check-interval", type=int, default=5,
                        help="steps between checks and kept frames (default: 5)")
    parser.add_argument("--frames-per-run", type=int, default=10,
                        help="frames kept from a stopped run, its stop frame last (default: 10)")
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="Å a distance may leave the data's range (default: 0.05)")
    parser.add_argument("--max-temperature-factor", type=float, default=2.0,
                        help="stop when T exceeds this times --temperature (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first run")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=_run_explore)


def _run_explore(args) -> int:
    from ase.io import write
    from ase.units import Bohr

    from ase_phisnet.core.domain import TrainingDomain
    from ase_phisnet.data.dataset import HamiltonianDataset
    from ase_phisnet.data.sampling import resolve_molecule
    from ase_phisnet.electronic.model_file import training_domain
    from ase_phisnet.interface.calculator import PhiSNetCalculator
    from ase_phisnet.interface.explore import ExploreSettings, explore

    settings = ExploreSettings(
        runs=args.runs, steps=args.steps, temperature_k=args.temperature,
        timestep_fs=args.timestep, check_interval=args.check_interval,
        frames_per_run=args.frames_per_run, distance_tolerance_ang=args.tolerance,
        max_temperature_factor=args.max_temperature_factor, seed=args.seed,
    )
    atoms = resolve_molecule(args.molecule)
    calculator = PhiSNetCalculator(model=args.model)
    if args.data:
        domains = []
        for path in args.data:
            dataset = HamiltonianDataset(path)
            domains.append(TrainingDomain.from_geometries(dataset.plan()[0],
                                                          dataset.positions_bohr() * Bohr))
            dataset.close()
        domain = TrainingDomain.union(domains)
    else:
        domain = training_domain(calculator.metadata)
        if domain is None:
            raise ValueError(f"{args.model} records no training domain: pass --data")
    runs = explore(atoms, calculator, domain, settings, progress=not args.no_progress)
    frames = [frame for run in runs for frame in run.frames]
    print(f"{'seed':>5} {'steps':>6} {'max T/K':>8}  stop")
    for run in runs:
        print(f"{run.seed:>5} {run.steps_run:>6} {run.max_temperature_k:>8.0f}  "
              f"{run.stop_reason} {run.detail}")
    if frames:
        write(args.out, frames)
        print(f"{len(frames)} frames from {sum(bool(r.frames) for r in runs)} stopped runs "
              f"written to {args.out}")
    else:
        print("every run completed inside the data; nothing written")
    return 0


def _add_cube(subparsers) -> None:
    parser = subparsers.add_parser(
        "cube", help="cube files of the predicted density and orbitals",
        description="Write Gaussian cube files (Bohr) of the predicted electron density and of "
        "chosen orbitals of a molecule, from a PhiSNet potential's density matrix and orbitals "
        "(PySCF's cubegen on the model's AO basis).")
    parser.add_argument("--molecule", default="H2O", help="ASE name or structure file")
    parser.add_argument("--model", default="water-pbe-def2svp",
                        help="shipped potential name or model file (default: water-pbe-def2svp)")
    parser.add_argument("--orbital", nargs="*", default=["homo", "lumo"],
                        help="orbitals: homo, lumo, homo-K, lumo+K or a 0-based index "
                        "(default: homo lumo)")
    parser.add_argument("--no-density", action="store_true", help="skip the density cube")
    parser.add_argument("--points", type=int, default=80, help="grid points per axis")
    parser.add_argument("--charge", type=int, default=0)
    parser.add_argument("--out", default="phisnet", help="prefix: PREFIX_density.cube, "
                        "PREFIX_<orbital>.cube (default: phisnet)")
    parser.set_defaults(run=_run_cube)


def _run_cube(args) -> int:
    from ase_phisnet.data.sampling import resolve_molecule
    from ase_phisnet.interface.calculator import PhiSNetCalculator
    from ase_phisnet.interface.wavefunction import write_density_cube, write_orbital_cube

    atoms = resolve_molecule(args.molecule)
    calc = PhiSNetCalculator(model=args.model, charge=args.charge)
    written = []
    if not args.no_density:
        written.append(f"{args.out}_density.cube")
        write_density_cube(atoms, calc, written[-1], points_per_axis=args.points)
    for orbital in args.orbital:
        written.append(f"{args.out}_{orbital}.cube")
        write_orbital_cube(atoms, calc, written[-1], orbital, points_per_axis=args.points)
    print("wrote " + ", ".join(written))
    return 0


def _add_ship(subparsers) -> None:
    parser = subparsers.add_parser(
        "ship",
        help="package trained potentials with test metrics, training domain and model card",
        description="Evaluate each trained model of a ship recipe (YAML: configs/ship_*.yaml) "
        "on its recorded test split and write NAME.pt, NAME.pt.json (metrics, training domain) "
        "and the model card NAME.md into the recipe's out_dir.",
    )
    parser.add_argument("recipe", help="ship recipe YAML file")
    parser.add_argument("--only", default=None, metavar="NAME",
                        help="ship only the potential called NAME")
    parser.set_defaults(run=_run_ship)


def _run_ship(args) -> int:
    from ase_phisnet.training.ship import read_recipes, ship

    recipes = read_recipes(args.recipe)
    if args.only is not None:
        recipes = [r for r in recipes if r.name == args.only]
        if not recipes:
            raise ValueError(f"{args.recipe} has no potential named {args.only!r}")
    for recipe in recipes:
        metrics = ship(recipe)
        print(f"{recipe.out_dir}/{recipe.name}.pt: {json.dumps(metrics)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ase-phisnet", description="Learned Hamiltonians (PhiSNet) for ASE."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_generate(subparsers)
    _add_train(subparsers)
    _add_evaluate(subparsers)
    _add_ship(subparsers)
    _add_potentials(subparsers)
    _add_md(subparsers)
    _add_explore(subparsers)
    _add_cube(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (PhiSNetError, ValueError, ImportError, FileNotFoundError) as error:
        print(f"ase-phisnet {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
