"""Shipping a trained potential: test-split metrics, the training domain and a model card.

``ase-phisnet ship RECIPE.yaml`` reads a recipe (:class:`ShipRecipe`, one entry per potential:
the trained model, its data files and the commands that made them, its training stages in
order, notes) and writes ``NAME.pt``, ``NAME.pt.json`` and the model card ``NAME.md`` for each
into the recipe's ``out_dir`` (the repository's ``potentials/``, installed as
``ase_phisnet.shipped``). The JSON carries the metrics of the test split recorded in the model
file and the domain of its training geometries
(:class:`~ase_phisnet.core.domain.TrainingDomain`), which the calculator checks every geometry
against.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
import yaml

from ase_phisnet.core._dataclasses import from_dict_checked
from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.electronic.model import with_exact_overlap
from ase_phisnet.electronic.model_file import load_model_file, save_model, training_domain
from ase_phisnet.training.data import training_domain_of_record
from ase_phisnet.training.evaluate import evaluate_model, trained_test_split


@dataclass(frozen=True)
class ExtraDataFile:
    """A further data file the model trained on, and the command that makes it."""

    dataset: str
    generate_command: str


@dataclass(frozen=True)
class ShipRecipe:
    """How one potential is shipped.

    Attributes:
        name: The potential's name (``water-pbe-def2svp``).
        model: The trained model file (the last stage's ``best_model.pt``).
        dataset: Its main data file; the card's test-split metrics are on it.
        generate_command: The command that makes ``dataset``.
        stage_configs: The training configs (YAML) in the order they ran.
        notes: A Markdown file whose text ends the card (optional).
        extra_data: Further data files the last stage trained on (its ``extra_data``).
        exact_overlap: Ship the model with S from the integrals instead of its S head.
        hardware: Where it was trained, in words.
        out_dir: Where the potential is written.
    """

    name: str
    model: str
    dataset: str
    generate_command: str
    stage_configs: tuple[str, ...]
    notes: str | None = None
    extra_data: tuple[ExtraDataFile, ...] = ()
    exact_overlap: bool = False
    hardware: str = "2-core x86 CPU, no GPU, one torch thread per job"
    out_dir: str = "potentials"

    def __post_init__(self):
        object.__setattr__(self, "stage_configs", tuple(self.stage_configs))
        object.__setattr__(self, "extra_data", tuple(
            extra if isinstance(extra, ExtraDataFile) else from_dict_checked(
                ExtraDataFile, extra, f"{self.name}.extra_data") for extra in self.extra_data))
        if not self.stage_configs:
            raise ValueError(f"{self.name}: stage_configs must name at least one config")


def read_recipes(path) -> list[ShipRecipe]:
    """The :class:`ShipRecipe` entries of a YAML file (``potentials: [ ... ]``; keys given at
    the top level apply to every entry that does not set them)."""
    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict) or not isinstance(values.get("potentials"), list):
        raise ValueError(f"{path}: a ship recipe needs a list under 'potentials'")
    shared = {k: v for k, v in values.items() if k != "potentials"}
    return [from_dict_checked(ShipRecipe, {**shared, **entry}, f"{path}: potentials[{n}]")
            for n, entry in enumerate(values["potentials"])]


def ship(recipe: ShipRecipe) -> dict:
    """Ship one potential as ``recipe`` says; returns its test-split metrics."""
    model_path = recipe.model
    if recipe.exact_overlap:
        model_path = _exact_overlap_copy(model_path)
    notes = open(recipe.notes).read() if recipe.notes else ""
    return ship_potential(model_path, recipe.dataset, recipe.name, list(recipe.stage_configs),
                          recipe.generate_command, recipe.hardware, notes, recipe.out_dir,
                          [(e.dataset, e.generate_command) for e in recipe.extra_data])


def _exact_overlap_copy(path: str) -> str:
    """``path`` turned over to S from the integrals, saved beside it with its metadata."""
    stem, extension = os.path.splitext(path)
    copy = f"{stem}_exact_overlap{extension}"
    model, meta = load_model_file(path)
    save_model(with_exact_overlap(model), copy,
               extra={k: v for k, v in meta.items() if k not in ("format", "format_version",
                                                                 "config")})
    return copy


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
    model, meta = load_model_file(model_path)
    model = model.to(torch.float64)
    training = meta["training"]
    domain = training_domain(meta)
    if domain is None or domain.neighbour_ranges_ang is None:  # recorded before they were
        domain = training_domain_of_record(training)
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
    # The card pairs each recorded extra file with its recipe entry by file name, not order.
    by_name = {os.path.basename(extra["dataset"].path): extra for extra in extras}
    recorded = [record["dataset"] for record in training["extra_data"]]
    if sorted(by_name) != sorted(recorded):
        raise ValueError(f"the recipe's extra data {sorted(by_name)} are not the files the model "
                         f"trained on beside the main one, {sorted(recorded)}")
    extras = [by_name[name] for name in recorded]
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
        "domain": domain.to_dict(), "training": training, "metrics": metrics.__dict__,
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
    baseline = {"core": " as a correction to the exact core Hamiltonian",
                "core_sap": " as a correction to the exact core Hamiltonian plus the "
                            "superposition of atomic potentials"}.get(config.baseline, "")
    exact = [name for flag, name in ((config.exact_overlap, "overlap"),
                                     (config.exact_core_hamiltonian, "core Hamiltonian"))
             if flag]
    return text + baseline + (f" ({' and '.join(exact)} from PySCF's integrals)" if exact
                              else "")


def _energy_sentence(config) -> str:
    """How the potential's energy is made, for the card's first paragraph."""
    if not config.predicts_energy:
        return "; no energies (it lacks matrices its energy model needs)."
    if config.remainder != "message_passing":
        return (f"; energy and forces follow from them through the {config.energy_model!r} "
                "energy model (docs/energy_models.md).")
    inputs = ("the geometry and each atom's shell populations and band-energy shares of the "
              "predicted electronic structure" if config.electronic_features
              else "the geometry")
    term = ("" if config.energy_model == "none"
            else f"the {config.energy_model!r} electronic term plus ")
    return (f". Its energy is {term}a message-passing remainder (PaiNN) of {inputs}, trained "
            "on energies and forces with the matrices frozen, so the matrices stay those of "
            "matrix training (docs/energy_models.md).")


def _data_lines(dataset, split, generate_command) -> list[str]:
    """What a data file holds, how it was made and how it was split (model card)."""
    sampler, planned = dataset.metadata.sampler, dataset.metadata.n_planned
    stretch, rattle = sampler.get("bond_stretch"), sampler.get("rattle_ang")
    angle = sampler.get("angle_scale")
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
        + (f", one bond angle per geometry scaled by U({angle[0]:g}, {angle[1]:g})" if angle
           else "")
        + (f", every coordinate rattled by N(0, {rattle:g}²) Å" if rattle else "")
        + f", PySCF {dataset.metadata.pyscf_version}",
        f"- made by: `{generate_command}`",
        f"- split (seed {split['seed']}): {split['n_train']} train, {split['n_validation']} "
        f"validation, {split['n_test']} test"
        + (" (drawn over the planned record indices: `over_plan`)" if split.get("over_plan")
           else ""),
    ]


def _core_hamiltonian_rows(model, metrics) -> list[str]:
    """The card's core-Hamiltonian row: exact, its MAE, or none for a model without it."""
    if model.config.exact_core_hamiltonian:
        return ["| core H | exact, from the integrals |"]
    if metrics.core_hamiltonian_mae_ueh is None:
        return []
    return [f"| core H MAE | {metrics.core_hamiltonian_mae_ueh:.1f} µEh |"]


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
        + _energy_sentence(model.config),
        "",
        "## Model",
        f"- theory: PySCF RKS {theory.xc.upper()}, basis {theory.basis}, grid level "
        f"{theory.grid_level}, charge {theory.charge}",
        f"- elements: {', '.join(model.config.elements)}",
        f"- architecture: {model.config.num_layers} layers, channels "
        f"{'/'.join(map(str, model.config.channels))}, cutoff {model.config.cutoff_bohr} Bohr, "
        f"TraceGrad {'on' if model.config.tracegrad else 'off'}; "
        f"{sum(p.numel() for p in model.parameters()):,} parameters (float32 weights)",
        *([f"- energy remainder: PaiNN, {model.config.remainder_layers} layers, "
           f"{model.config.remainder_channels} channels, cutoff "
           f"{model.config.remainder_cutoff_bohr} Bohr; "
           f"{sum(p.numel() for p in model.remainder.parameters()):,} of the parameters"]
          if model.config.remainder == "message_passing" else []),
        *([f"- pair repulsion prior: {model.config.pair_repulsion.upper()} screened nuclear "
           f"repulsion, switched off at {model.config.pair_repulsion_cutoff_scale:g}× each "
           "pair's covalent radii sum (`ase_phisnet.electronic.priors`)"]
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
        *_core_hamiltonian_rows(model, metrics),
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
