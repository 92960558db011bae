#!/usr/bin/env bash
# Package the trained water potentials into potentials/ with model cards and test metrics:
# water-pbe-def2svp (stages 1-3, energies and forces) and water-pbe-def2svp-orbitals (stage 1).
# Needs: data/water_pbe_def2svp.h5 (README, "Shipped potentials") and both training stages run.
set -euo pipefail
python - <<'PY'
from ase_phisnet.potentials import ship_potential

metrics = ship_potential(
    "runs/water_pbe_def2svp/stage3/best_model.pt", "data/water_pbe_def2svp.h5",
    "water-pbe-def2svp",
    ["configs/water_pbe_def2svp_stage1.yaml", "configs/water_pbe_def2svp_stage2.yaml",
     "configs/water_pbe_def2svp_stage3.yaml"],
    generate_command="ase-phisnet generate --molecule H2O --n 1000 --xc pbe --basis def2-svp "
    "--temperature 300 500 --workers 2 --seed 0 --out data/water_pbe_def2svp.h5",
    hardware="2-core x86 CPU, no GPU, one torch thread per job",
    notes=open("configs/water_pbe_def2svp_notes.md").read())
print(metrics)

# Stage 1 alone: the matrices/orbitals potential (its card says what it is for).
metrics = ship_potential(
    "runs/water_pbe_def2svp/stage1/best_model.pt", "data/water_pbe_def2svp.h5",
    "water-pbe-def2svp-orbitals", ["configs/water_pbe_def2svp_stage1.yaml"],
    generate_command="ase-phisnet generate --molecule H2O --n 1000 --xc pbe --basis def2-svp "
    "--temperature 300 500 --workers 2 --seed 0 --out data/water_pbe_def2svp.h5",
    hardware="2-core x86 CPU, no GPU, one torch thread per job",
    notes=open("configs/water_pbe_def2svp_orbitals_notes.md").read())
print(metrics)
PY
