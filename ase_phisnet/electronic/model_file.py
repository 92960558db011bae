"""Model files: weights (``NAME.pt``) beside JSON metadata (``NAME.pt.json``), never a pickle.

``NAME.pt`` is ``torch.save`` of ``{"format", "format_version", "state_dict"}``, read with
``weights_only=True``. ``NAME.pt.json`` holds the format, the :class:`ModelConfig`, and what
training recorded: the training record (theory, data, split), test metrics, and the training
data's domain (:class:`~ase_phisnet.core.domain.TrainingDomain`, under ``"domain"``).

Format versions: 2 stores the matrix network's weights under ``network.`` and the learned
remainder's under ``remainder.``; version 1 files (one flat module, the remainder as
``energy_mlp.`` and ``element_energy_eh``) are read and mapped onto version 2. Version 3 adds
the bounds of a message-passing remainder's electronic features (``remainder.feature_lower``,
``remainder.feature_upper``); older files had none and are read with infinite bounds, so they
compute what they always did. A config field
that a file does not record had, when the file was written, the value in
:data:`UNRECORDED_FIELDS` (the defaults of that time), not today's default.
"""

from __future__ import annotations

import json
import os

import torch

from ase_phisnet.core.domain import TrainingDomain
from ase_phisnet.core.errors import ModelFileError
from ase_phisnet.electronic.model import ModelConfig, PhiSNetModel
from ase_phisnet.electronic.priors import DEFAULT_CUTOFF_SCALE

MODEL_FORMAT = "ase-phisnet-model"
MODEL_FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)

#: ModelConfig fields added after files were written, with the value such a file meant
#: (:func:`recorded_config` applies them).
UNRECORDED_FIELDS = {"matrices": ("hamiltonian", "overlap", "core_hamiltonian"),
                     "exact_overlap": False, "exact_core_hamiltonian": False,
                     "baseline": "none", "energy_model": "phisnet", "remainder": "atomwise",
                     "pair_repulsion": "none", "remainder_norm_eps": 1e-8,
                     "pair_repulsion_cutoff_scale": 1.0, "sap_basis": "sapgrasplarge"}


def recorded_config(values: dict) -> ModelConfig:
    """The :class:`ModelConfig` a file or checkpoint recorded as ``values``: a field it predates
    takes the value of its time (:data:`UNRECORDED_FIELDS`), except the prior's cutoff scale
    where the file had no prior (the scale changes nothing there, so today's default)."""
    completed = {**UNRECORDED_FIELDS, **values}
    if completed["pair_repulsion"] == "none" and "pair_repulsion_cutoff_scale" not in values:
        completed["pair_repulsion_cutoff_scale"] = DEFAULT_CUTOFF_SCALE
    return ModelConfig.from_dict(completed)


def save_model(model: PhiSNetModel, path, extra: dict | None = None) -> None:
    """Write ``path`` (weights) and ``path + '.json'`` (config and ``extra`` metadata).

    Both are written to temporary files (``.tmp``) first and then renamed, the JSON last: a
    crash mid-write (training overwrites its best model at every improvement) leaves no
    truncated file under either name, at worst new weights beside the previous JSON (and a
    stray ``.tmp``).
    """
    path = os.fspath(path)
    meta = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
            "config": model.config.to_dict(), **(extra or {})}
    torch.save({"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
                "state_dict": model.state_dict()}, path + ".tmp")
    with open(path + ".json.tmp", "w") as handle:
        json.dump(meta, handle, indent=2)
    os.replace(path + ".tmp", path)
    os.replace(path + ".json.tmp", path + ".json")


def read_metadata(path) -> dict:
    """The JSON metadata of the model file ``path``, checked for format and version."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileError(f"{path}: no such model file")
    try:
        with open(path + ".json") as handle:
            meta = json.load(handle)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: missing config file {path + '.json'}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{path}.json: not valid JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelFileError(f"{path}.json: not an ase-phisnet model (format {found!r})")
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise ModelFileError(f"{path}: model format version {meta.get('format_version')}; this "
                             f"ase_phisnet reads versions {READABLE_VERSIONS}")
    return meta


def training_domain(meta: dict) -> TrainingDomain | None:
    """The training data's domain recorded in model metadata, or ``None`` if it has none."""
    if "domain" not in meta:
        return None
    try:
        return TrainingDomain.from_dict(meta["domain"])
    except ValueError as error:
        raise ModelFileError(f"model metadata: {error}") from None


def upgraded_state_dict(state: dict, version: int) -> dict:
    """A state dict in the current version's layout (module docstring)."""
    if version >= 3:
        return state
    if version == 2:
        upgraded = dict(state)
        if "remainder.feature_mean" in state:  # unbounded features, as version 2 computed
            mean = state["remainder.feature_mean"]
            upgraded["remainder.feature_lower"] = torch.full_like(mean, -float("inf"))
            upgraded["remainder.feature_upper"] = torch.full_like(mean, float("inf"))
        return upgraded
    renamed = {}
    for key, value in state.items():
        if key.startswith("energy_mlp."):
            renamed["remainder.mlp." + key[len("energy_mlp."):]] = value
        elif key == "element_energy_eh":
            renamed["remainder.element_energy_eh"] = value
        else:
            renamed["network." + key] = value
    return renamed


def load_model_file(path, map_location="cpu") -> tuple[PhiSNetModel, dict]:
    """``(model, metadata)`` of a file written by :func:`save_model`; a
    :class:`~ase_phisnet.core.errors.ModelFileError` naming the problem for corrupt, foreign or
    mismatched files."""
    path = os.fspath(path)
    meta = read_metadata(path)
    try:
        config = recorded_config(meta["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f"{path}.json: invalid model config ({error})") from None
    training_domain(meta)  # a corrupt domain fails here, not at the first calculation
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
        state = payload["state_dict"]
        dtype = next(iter(state.values())).dtype
    except Exception as error:
        raise ModelFileError(f"{path}: unreadable or corrupt weights ({error})") from None
    model = PhiSNetModel(config).to(dtype)
    try:
        model.load_state_dict(upgraded_state_dict(state, int(meta["format_version"])))
    except RuntimeError as error:
        raise ModelFileError(f"{path}: weights do not match the config ({error})") from None
    return model, meta


def load_model(path, map_location="cpu") -> PhiSNetModel:
    """The model of a file written by :func:`save_model` (see :func:`load_model_file`)."""
    return load_model_file(path, map_location)[0]
