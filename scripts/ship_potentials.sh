#!/usr/bin/env bash
# Package trained potentials into potentials/ with model cards and test-split metrics.
#
#   bash scripts/ship_potentials.sh water     # water-pbe-def2svp (stages 1-3) and -orbitals (stage 1)
#   bash scripts/ship_potentials.sh ethanol   # ethanol-pbe-def2svp (stages 1, 1b, 2), -orbitals (1, 1b)
#
# Needs the molecule's data set (README, "Shipped potentials") and its training stages run with
# the configs named below (configs/<molecule>_pbe_def2svp_stage*.yaml).
set -euo pipefail
molecule="${1:?usage: ship_potentials.sh water|ethanol}"
python - "$molecule" <<'PY'
import sys

from ase_phisnet.potentials import ship_potential

FORMULA = {"water": "H2O", "ethanol": "CH3CH2OH"}
#: Training stages in order: the matrices-only ones (the -orbitals potential), then end to end.
MATRIX_STAGES = {"water": ["stage1"], "ethanol": ["stage1", "stage1b"]}
ENERGY_STAGES = {"water": ["stage2", "stage3"], "ethanol": ["stage2"]}

molecule = sys.argv[1]
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
    print(ship_potential(f"runs/{stem}/{stages[-1]}/best_model.pt", name=name,
                         stage_configs=[f"configs/{stem}_{stage}.yaml" for stage in stages],
                         notes=open(f"configs/{stem}_{notes}.md").read(), **common))
PY
