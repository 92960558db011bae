"""Smoke test of benchmarks/interleaved_calls.py: each variant runs in its own process, round by
round, and its medians land in the JSON; a malformed variant is refused."""

import json

from benchmark_scripts import load_benchmark

import pytest

def load_script():
    return load_benchmark("interleaved_calls")


def test_variants_are_timed_round_by_round(tmp_path):
    script = load_script()
    script.main(["--molecules", "H2O", "--threads", "1", "--rounds", "2", "--calls", "1",
                 "--variants", "compact=sapcompact", "--out", str(tmp_path)])
    medians = json.loads((tmp_path / "interleaved_calls.json").read_text())["median_ms"]["H2O"]
    assert set(medians) == {"compact"}
    assert len(medians["compact"]) == 2 and min(medians["compact"]) > 0


def test_a_malformed_variant_is_refused():
    with pytest.raises(SystemExit, match="LABEL=SAP_FIT"):
        load_script().parse_variant("sapcompact")
