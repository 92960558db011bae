#!/usr/bin/env bash
# Package trained potentials into potentials/ with model cards and test-split metrics.
#
#   bash scripts/ship_potentials.sh water     # water-pbe-def2svp (stages 1-3) and -orbitals (stage 1)
#   bash scripts/ship_potentials.sh ethanol   # ethanol-pbe-def2svp (1, 1b, 1c, 2-10_band), -orbitals (1, 1b, 1c)
#   bash scripts/ship_potentials.sh ethanol orbitals   # only the -orbitals one
#
# Needs the molecule's data set (README, "Shipped potentials") and its training stages run with
# the configs named below (configs/<molecule>_pbe_def2svp_stage*.yaml).
set -euo pipefail
molecule="${1:?usage: ship_potentials.sh water|ethanol [orbitals]}"
python - "$molecule" "${2:-}" <<'PY'
import json
import sys

from ase_phisnet.electronic.model import load_model, save_model, with_exact_overlap
from ase_phisnet.interface.potentials import ship_potential

FORMULA = {"water": "H2O", "ethanol": "CH3CH2OH"}
#: Training stages in order: the matrices-only ones (the -orbitals potential), then end to end.
MATRIX_STAGES = {"water": ["stage1"], "ethanol": ["stage1", "stage1b", "stage1c"]}
ENERGY_STAGES = {"water": ["stage2", "stage3"],
                 "ethanol": ["stage2_band", "stage3_band", "stage4_band", "stage5_band_zbl",
                             "stage6_band_zbl", "stage7_band_zbl_al", "stage8_band_zbl_al",
                             "stage9_band_zbl_al", "stage10_band_zbl_al"]}
#: Further data files the last energy stage trained on (its config's extra_data), with the
#: commands that make them.
_GENERATE = "ase-phisnet generate --molecule CH3CH2OH --xc pbe --basis def2-svp --workers 2 "
EXTRA_DATA = {"water": [], "ethanol": [
    ("data/ethanol_pbe_def2svp_stretched.h5", _GENERATE + "--n 250 --temperature 300 500 "
     "--bond-stretch 0.85 1.5 --seed 2 --out data/ethanol_pbe_def2svp_stretched.h5"),
    ("data/ethanol_pbe_def2svp_hot.h5", _GENERATE + "--n 400 --temperature 800 1000 --seed 1 "
     "--out data/ethanol_pbe_def2svp_hot.h5"),
    ("data/ethanol_pbe_def2svp_rattled.h5", _GENERATE + "--n 200 --temperature 300 500 "
     "--rattle 0.1 --seed 3 --out data/ethanol_pbe_def2svp_rattled.h5"),
    # Active learning: NVT frames where earlier stages failed (ase-phisnet explore; the stage
    # configs say which model found them), labeled by PySCF.
    *[(f"data/ethanol_pbe_def2svp_al{k}.h5", _GENERATE + f"--n {n} --temperature 300 "
       f"--sampler file --geometries configs/ethanol_active_learning/round{k}_frames.xyz "
       f"--out data/ethanol_pbe_def2svp_al{k}.h5")
      for k, n in ((1, 72), (2, 58), (3, 78), (4, 30))],
]}
#: Molecules whose orbitals potential takes S from the integrals (its learned S was indefinite
#: at some geometries; configs/ethanol_pbe_def2svp_stage1b.yaml).
EXACT_OVERLAP = {"ethanol"}


def exact_overlap_copy(path: str) -> str:
    """``path`` turned over to S from the integrals, saved beside it with its training record."""
    copy = path.replace(".pt", "_exact_overlap.pt")
    meta = json.load(open(path + ".json"))
    save_model(with_exact_overlap(load_model(path)), copy,
               extra={k: v for k, v in meta.items() if k not in ("format", "format_version",
                                                                 "config")})
    return copy


molecule, only = sys.argv[1], sys.argv[2]
if molecule not in FORMULA:
    sys.exit(f"unknown molecule {molecule!r}; choose from {sorted(FORMULA)}")
stem = f"{molecule}_pbe_def2svp"
common = dict(
    dataset_path=f"data/{stem}.h5",
    generate_command=f"ase-phisnet generate --molecule {FORMULA[molecule]} --n 1000 --xc pbe "
    f"--basis def2-svp --temperature 300 500 --workers 2 --seed 0 --out data/{stem}.h5",
    hardware="2-core x86 CPU, no GPU, one torch thread per job",
)
for name, stages, notes in (
        (f"{molecule}-pbe-def2svp", MATRIX_STAGES[molecule] + ENERGY_STAGES[molecule], "notes"),
        # The matrices-only stages alone: the orbitals potential (its card says what it is for).
        (f"{molecule}-pbe-def2svp-orbitals", MATRIX_STAGES[molecule], "orbitals_notes")):
    if only == "orbitals" and not name.endswith("-orbitals"):
        continue
    model_path = f"runs/{stem}/{stages[-1]}/best_model.pt"
    if name.endswith("-orbitals") and molecule in EXACT_OVERLAP:
        model_path = exact_overlap_copy(model_path)
    print(ship_potential(model_path, name=name,
                         stage_configs=[f"configs/{stem}_{stage}.yaml" for stage in stages],
                         notes=open(f"configs/{stem}_{notes}.md").read(),
                         extra_data=[] if name.endswith("-orbitals") else EXTRA_DATA[molecule],
                         **common))
PY
