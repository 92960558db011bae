"""Shipped potentials: model files in the repository's ``potentials/`` folder.

That folder is installed as the package ``ase_phisnet.shipped`` (see ``pyproject.toml``) and
read through :mod:`importlib.resources`, so name lookup works from an installed wheel as well as
from a checkout. A potential ``NAME`` is ``NAME.pt`` (weights), ``NAME.pt.json`` (config and
training record) and ``NAME.md`` (model card).
"""

from __future__ import annotations

import json
from importlib import resources

from ase_phisnet.core.errors import ModelFileError


def _shipped():
    return resources.files("ase_phisnet.shipped")


def list_potentials() -> list[dict]:
    """Every shipped potential, sorted by name.

    Each entry: ``name``, ``xc``, ``basis``, ``elements``, ``metrics`` (the model card's
    test-split metrics, :class:`ase_phisnet.training.evaluate.Metrics` fields) and ``card`` (the model
    card's text).
    """
    found = []
    for entry in _shipped().iterdir():
        if entry.name.endswith(".pt.json"):
            name = entry.name[: -len(".pt.json")]
            meta = json.loads(entry.read_text())
            card = _shipped() / f"{name}.md"
            found.append({"name": name,
                          "xc": meta.get("training", {}).get("theory", {}).get("xc"),
                          "basis": meta["config"]["basis"],
                          "elements": meta["config"]["elements"],
                          "metrics": meta.get("metrics", {}),
                          "card": card.read_text() if card.is_file() else ""})
    return sorted(found, key=lambda item: item["name"])


METRIC_LINES = (
    ("hamiltonian_mae_ueh", "H MAE", "{:.1f} µEh"),
    ("occupied_energy_mae_ueh", "occupied ε MAE", "{:.1f} µEh"),
    ("occupied_cosine_similarity_pct", "orbital |cos|", "{:.3f} %"),
    ("dipole_mae_debye", "dipole MAE", "{:.3f} D"),
    ("energy_mae_mev", "energy MAE", "{:.2f} meV"),
    ("force_mae_mev_per_ang", "force MAE", "{:.1f} meV/Å"),
    ("force_max_error_mev_per_ang", "largest force error", "{:.0f} meV/Å"),
)


def describe_potential(entry: dict) -> str:
    """A few lines on one :func:`list_potentials` entry: theory, elements, test metrics."""
    lines = [f"{entry['name']}: {(entry['xc'] or '?').upper()}/{entry['basis']}, elements "
             f"{', '.join(entry['elements'])}"]
    metrics = entry["metrics"]
    if metrics.get("n_geometries"):
        lines.append(f"  test split: {metrics['n_geometries']} geometries")
    for key, label, form in METRIC_LINES:
        if metrics.get(key) is not None:
            lines.append(f"  {label:<20} {form.format(metrics[key])}")
    return "\n".join(lines)


def potential_path(name: str) -> str:
    """Filesystem path of the shipped potential ``name``'s weights."""
    weights = _shipped() / f"{name}.pt"
    if not weights.is_file():
        names = [p["name"] for p in list_potentials()]
        raise ModelFileError(f"no model file or shipped potential named {name!r}; shipped: "
                             f"{names or 'none yet'}")
    return str(weights)


#: The molecule each potential was trained on, by chemical formula in Hill order (what
#: ``Atoms.get_chemical_formula()`` returns); a potential counts only once it is shipped.
_POTENTIALS_BY_FORMULA = {"H2O": "water-pbe-def2svp", "C2H6O": "ethanol-pbe-def2svp"}


def default_potential(atoms_or_formula) -> str:
    """Name of the shipped potential trained on a molecule, for ``PhiSNetCalculator(model=...)``.

    ``atoms_or_formula``: an ASE ``Atoms`` or a chemical formula (``"H2O"``; any order of the
    elements, ``"CH3CH2OH"`` and ``"C2H6O"`` alike). Molecules are matched by formula alone, so
    isomers share a potential (dimethyl ether gets the ethanol one). Raises
    :class:`~ase_phisnet.core.errors.ModelFileError`, naming what is shipped, when no shipped
    potential was trained on that formula.
    """
    from ase.formula import Formula

    if isinstance(atoms_or_formula, str):
        try:
            formula = Formula(atoms_or_formula).format("hill")
        except ValueError:
            formula = atoms_or_formula
    else:
        formula = atoms_or_formula.get_chemical_formula()
    name = _POTENTIALS_BY_FORMULA.get(formula)
    shipped = [entry["name"] for entry in list_potentials()]
    if name in shipped:
        return name
    trained_on = {potential: f for f, potential in _POTENTIALS_BY_FORMULA.items()}
    listing = ", ".join(f"{n} ({trained_on.get(n, '?')})" for n in shipped) or "none yet"
    planned = f" ({name} is not shipped yet)" if name else ""
    raise ModelFileError(f"no shipped potential for {formula}{planned}; shipped: {listing}; "
                         "pass a model file or name")


def ship_potential(model_path: str, dataset_path: str, name: str, stage_configs: list[str],
                   generate_command: str, hardware: str, notes: str = "",
                   out_dir: str = "potentials", extra_data: tuple = ()) -> dict:
    """Evaluate a trained model on its test split and write ``NAME.pt``, ``NAME.pt.json`` (with
    the metrics) and the model card ``NAME.md`` into ``out_dir``; returns the metrics.

    ``stage_configs``: the YAML training configs in the order they ran (each stage's
    ``best_model.pt.json`` beside its ``output_dir`` gives its epochs and training time).
    ``extra_data``: ``(dataset_path, generate_command)`` of each further data file the last
    stage trained on (``extra_data`` of its config); the card gives their test-split metrics
    too, apart from the main ones.
    """
    import os

    import torch
    import yaml

    from ase_phisnet.data.dataset import HamiltonianDataset
    from ase_phisnet.electronic.model_file import load_model, save_model
    from ase_phisnet.training.evaluate import evaluate_model, trained_test_split

    model = load_model(model_path).to(torch.float64)
    with open(model_path + ".json") as handle:
        training = json.load(handle)["training"]
    dataset = HamiltonianDataset(dataset_path)
    metrics = evaluate_model(model, dataset, trained_test_split({"training": training}, dataset))
    training = {**training, "dataset": os.path.basename(dataset_path)}
    extras = []
    for extra_path, extra_command in extra_data:
        extra_dataset = HamiltonianDataset(extra_path)
        extras.append({"dataset": extra_dataset, "generate_command": extra_command,
                       "metrics": evaluate_model(model, extra_dataset, trained_test_split(
                           {"training": training}, extra_dataset))})
    training["extra_data"] = [{**record, "dataset": os.path.basename(record["dataset"])}
                              for record in training.get("extra_data", [])]
    stages = []
    for path in stage_configs:
        with open(path) as handle:
            config = yaml.safe_load(handle)
        with open(os.path.join(config["output_dir"], "best_model.pt.json")) as handle:
            record = json.load(handle)["training"]
        stages.append({"config_file": path, "config_text": open(path).read(),
                       "epochs": record["epoch"], "train_time_s": record["train_time_s"]})
    os.makedirs(out_dir, exist_ok=True)
    weights = os.path.join(out_dir, f"{name}.pt")
    save_model(model.float(), weights, extra={
        "training": training, "metrics": metrics.__dict__,
        "extra_metrics": {os.path.basename(extra["dataset"].path): extra["metrics"].__dict__
                          for extra in extras},
        "stages": [{k: v for k, v in stage.items() if k != "config_text"} for stage in stages]})
    with open(os.path.join(out_dir, f"{name}.md"), "w") as handle:
        handle.write(model_card(name, model, dataset, training, metrics, stages,
                                generate_command, hardware, notes, extras))
    return metrics.__dict__


def _predicted_matrices(config) -> str:
    """'Kohn–Sham Hamiltonian, overlap and core Hamiltonian' or what the model predicts."""
    words = {"hamiltonian": "Kohn–Sham Hamiltonian", "overlap": "overlap",
             "core_hamiltonian": "core Hamiltonian"}
    names = [words[name] for name in config.matrices]
    text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return text + (" (overlap from PySCF's integrals)" if config.exact_overlap else "")


def _data_lines(dataset, split, generate_command) -> list[str]:
    """What a data file holds, how it was made and how it was split (model card)."""
    sampler, planned = dataset.metadata.sampler, dataset.metadata.n_planned
    stretch, rattle = sampler.get("bond_stretch"), sampler.get("rattle_ang")
    if sampler["kind"] == "file":
        origin = f"frames of `{sampler['geometries_path']}`"
    else:
        temperatures = ", ".join(f"{t:g}" for t in sampler["temperatures_k"])
        origin = (f"sampler {sampler['kind']} with {sampler.get('calculator', '?')} at "
                  f"{temperatures} K (seed {sampler['seed']})")
    return [
        (f"- {planned} geometries" if len(dataset) == planned else
         f"- {len(dataset)} of {planned} planned geometries (generation stopped early; the "
         "command resumes it)")
        + f", {origin}"
        + (f", one bond per geometry scaled by U({stretch[0]:g}, {stretch[1]:g})" if stretch
           else "")
        + (f", every coordinate rattled by N(0, {rattle:g}²) Å" if rattle else "")
        + f", PySCF {dataset.metadata.pyscf_version}",
        f"- made by: `{generate_command}`",
        f"- split (seed {split['seed']}): {split['n_train']} train, {split['n_validation']} "
        f"validation, {split['n_test']} test"
        + (" (drawn over the planned record indices: `over_plan`)" if split.get("over_plan")
           else ""),
    ]


def model_card(name, model, dataset, training, metrics, stages, generate_command, hardware,
               notes, extras=()) -> str:
    """The model card's Markdown text."""
    theory = dataset.metadata.theory
    total_time = sum(stage["train_time_s"] for stage in stages)
    lines = [
        f"# {name}",
        "",
        f"PhiSNet potential for {dataset.metadata.molecule}: predicts the "
        f"{theory.xc.upper()}/{theory.basis} {_predicted_matrices(model.config)}"
        + (f"; energy and forces follow from them through the {model.config.energy_model!r} "
           "energy model (README, 'Electronic structure and the energy model')."
           if model.config.predicts_energy else "; no energies (it lacks matrices its energy "
           "model needs)."),
        "",
        "## Model",
        f"- theory: PySCF RKS {theory.xc.upper()}, basis {theory.basis}, grid level "
        f"{theory.grid_level}, charge {theory.charge}",
        f"- elements: {', '.join(model.config.elements)}",
        f"- architecture: {model.config.num_layers} layers, channels "
        f"{'/'.join(map(str, model.config.channels))}, cutoff {model.config.cutoff_bohr} Bohr, "
        f"TraceGrad {'on' if model.config.tracegrad else 'off'}; "
        f"{sum(p.numel() for p in model.parameters()):,} parameters (float32 weights)",
        *([f"- pair repulsion prior: {model.config.pair_repulsion.upper()} screened nuclear "
           "repulsion, switched off at the covalent radii sum (`ase_phisnet.electronic.priors`)"]
          if model.config.pair_repulsion != "none" else []),
        "",
        "## Data",
        f"`data/{training['dataset']}` (the test-split metrics below are on it):",
        *_data_lines(dataset, training["split"], generate_command),
    ]
    for extra, record in zip(extras, training.get("extra_data", [])):
        lines += [f"`data/{record['dataset']}`, trained on beside it:",
                  *_data_lines(extra["dataset"], record["split"], extra["generate_command"])]
    lines += [
        "",
        "## Training",
        f"- hardware: {hardware}; total training time {total_time / 60:.0f} min",
    ]
    for number, stage in enumerate(stages, 1):
        lines += [f"- stage {number}: `ase-phisnet train {stage['config_file']}` "
                  f"({stage['epochs']} epochs, {stage['train_time_s'] / 60:.0f} min)", "",
                  "```yaml", stage["config_text"].rstrip(), "```", ""]
    lines += [
        "## Test-split metrics",
        f"Reproduce: `ase-phisnet evaluate potentials/{name}.pt data/{training['dataset']}` "
        "(float64; the split is recorded in the model file).",
        "",
        "| metric | value |",
        "|---|---|",
        f"| H MAE | {metrics.hamiltonian_mae_ueh:.1f} µEh |",
        *([f"| core H MAE | {metrics.core_hamiltonian_mae_ueh:.1f} µEh |"]
          if metrics.core_hamiltonian_mae_ueh is not None else []),
        ("| S | exact, from the integrals |" if model.config.exact_overlap
         else f"| S MAE | {metrics.overlap_mae:.2e} |"),
        f"| occupied orbital-energy MAE | {metrics.occupied_energy_mae_ueh:.1f} µEh |",
        f"| occupied orbital cosine similarity | {metrics.occupied_cosine_similarity_pct:.3f} % |",
        f"| dipole MAE (per component, from the predicted density) | "
        f"{metrics.dipole_mae_debye:.3f} D |",
    ]
    if metrics.energy_mae_mev is not None:
        lines += [
            f"| energy MAE | {metrics.energy_mae_mev:.2f} meV "
            f"({metrics.energy_mae_kcal_mol:.3f} kcal/mol) |",
            f"| force MAE | {metrics.force_mae_mev_per_ang:.1f} meV/Å "
            f"({metrics.force_mae_kcal_mol_per_ang:.3f} kcal/mol/Å) |",
            f"| largest force error (one atom, vector norm) | "
            f"{metrics.force_max_error_mev_per_ang:.0f} meV/Å |",
        ]
    for extra, record in zip(extras, training.get("extra_data", [])):
        extra_metrics = extra["metrics"]
        lines += ["", f"On the test split of `data/{record['dataset']}` "
                  f"({extra_metrics.n_geometries} geometries; `ase-phisnet evaluate "
                  f"potentials/{name}.pt data/{record['dataset']}`): H MAE "
                  f"{extra_metrics.hamiltonian_mae_ueh:.1f} µEh"
                  + (f", energy MAE {extra_metrics.energy_mae_mev:.2f} meV, force MAE "
                     f"{extra_metrics.force_mae_mev_per_ang:.1f} meV/Å, largest force error "
                     f"{extra_metrics.force_max_error_mev_per_ang:.0f} meV/Å"
                     if extra_metrics.energy_mae_mev is not None else "") + "."]
    lines.append("")
    if notes:
        lines += ["## Notes", notes.strip(), ""]
    return "\n".join(lines)
