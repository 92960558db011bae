"""Training configuration: validation, and every shipped config parses into a model config."""

from pathlib import Path

import pytest
import yaml
from model_settings import PREDICTED_MATRICES

from ase_phisnet.electronic.model import ModelConfig
from ase_phisnet.training.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# configs/ also holds ship recipes ("potentials: [...]", tests/training/test_ship.py)
TRAINING_CONFIGS = sorted(str(p) for p in CONFIGS.glob("*.yaml")
                          if "potentials" not in (yaml.safe_load(p.read_text()) or {}))


@pytest.mark.parametrize(
    "values,message",
    [
        ({"optim": {"optimizer": "sgd"}}, "optimizer must be one of"),
        ({"optim": {"dtype": "float16"}}, "dtype must be one of"),
        ({"optim": {"select_on": "best"}}, "select_on must be 'all' or 'main'"),
        ({"optim": {"feature_noise": -0.1}}, "feature_noise must be a finite number >= 0"),
        ({"optim": {"cache_workers": 0}}, "cache_workers must be a whole number >= 1"),
        ({"optim": {"learing_rate": 1.0}}, "unknown keys in 'optim'"),
        ({"optim": {"grad_clip": 0.0}}, "grad_clip .* must be a finite number > 0"),
        ({"optim": {"grad_clip": -1.0}}, "grad_clip .* must be a finite number > 0"),
        ({"optim": {"early_stopping_patience": 0}}, "early_stopping_patience must be a whole"),
        ({"optim": {"lr_patience": 2.5}}, "lr_patience must be a whole"),
        ({"optim": {"min_learning_rate": 1.0}}, r"min_learning_rate must be in \[0, learning"),
        ({"optim": {"weight_decay": -1e-4}}, "weight_decay must be >= 0"),
        ({"optim": {"max_time_minutes": 0}}, "max_time_minutes must be > 0"),
        ({"loss": {"hamiltonian": -1.0}}, "loss weights"),
        ({"loss": {"virtual_orbitals": 1.5}}, "virtual_orbitals must be a whole number"),
        ({"extra_data": [{"split": {"n_train": 3}}]}, "needs 'dataset'"),
        ({"extra_data": [{"dataset": "y.h5", "spilt": {}}]}, "unknown keys in 'extra_data'"),
        ({"extra_data": [{"dataset": "y.h5", "repeat": 0}]}, "repeat must be a whole number"),
    ],
)
def test_training_config_validates(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict({"dataset": "x.h5", "output_dir": "out", **values})


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: Path(p).name)
def test_every_shipped_training_config_is_valid(path):
    """The configs the model cards cite parse, and their model settings are ModelConfig
    fields (those of fine-tunes are applied by init_from, fresh ones build a model)."""
    config = TrainConfig.from_yaml(path)
    base = {"elements": ["H", "C", "O"]}
    if config.init_from:  # fine-tunes of the older models: S and H_core predicted, no baseline
        base.update(PREDICTED_MATRICES)
        if config.model.get("exact_overlap"):  # a fine-tune that drops the S head
            base["matrices"] = ["hamiltonian", "core_hamiltonian"]
    ModelConfig.from_dict({**base, **config.model})


def test_the_shipped_configs_are_found():
    """The parametrization above would pass vacuously on an empty folder (as it did for a
    while after the move into tests/training/: the path pointed at tests/configs)."""
    assert len(TRAINING_CONFIGS) >= 10
