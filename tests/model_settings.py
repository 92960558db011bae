"""ModelConfig settings the tests share.

``PREDICTED_MATRICES``: the older kind of model, whose network predicts S and H_core as well as
H, with no baseline under H (the shipped potentials are of this kind); the defaults today take S
and H_core from the integrals and learn ``H - H_core - V_SAP``.
"""

PREDICTED_MATRICES = {"matrices": ("hamiltonian", "overlap", "core_hamiltonian"),
                      "exact_overlap": False, "exact_core_hamiltonian": False, "baseline": "none"}
