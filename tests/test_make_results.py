"""bench/make_results.py and bench/paper_scale.py: which commands make which result files."""

from __future__ import annotations

import csv

import pytest

from _helpers import ROOT, load_script


@pytest.fixture(scope="module")
def make_results():
    return load_script("bench/make_results.py")


def test_every_readme_table_source_is_regenerated(make_results):
    """Each results file a README table names is an output of a make_results step."""
    tables = load_script("tests/test_readme_tables.py")
    sources = {tables._source(t) for t in tables.TABLES} - {None}
    outputs = {name for step in make_results.STEPS for name in step.outputs}
    assert sources and sources <= outputs, sources - outputs


def test_quick_never_writes_into_the_results_folder(make_results, capsys):
    assert make_results.main(["--quick", "--out", str(ROOT / "bench" / "results"), "--list"]) == 2
    assert "never writes into bench/results" in capsys.readouterr().err
    assert make_results.main(["--only", "nope", "--list"]) == 2


def test_list_fills_placeholders_and_keeps_paper_scale_optional(make_results, tmp_path, capsys):
    assert make_results.main(["--quick", "--out", str(tmp_path), "--list"]) == 0
    out = capsys.readouterr().out
    assert "{out}" not in out and "{python}" not in out and str(tmp_path) in out
    assert not any(line.startswith("paper_scale:") for line in out.splitlines()) and "--limit 20" in out
    assert make_results.main(["--list", "--paper-scale"]) == 0
    full = capsys.readouterr().out
    assert "bench/paper_scale.py" in full and "--out-dir bench/results" in full and "--limit" not in full


def test_paper_scale_tiny_writes_csv_and_ratios(tmp_path):
    ps = load_script("bench/paper_scale.py")
    assert ps.main(["--tiny", "--methods", "explainer,reciprocam,gradcam", "--heads", "lraspp_mobilenet_v3",
                    "--no-onnx", "--out-dir", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "latency_paper_scale_cpu.csv").open()))
    assert list(rows[0])[:6] == ["classifier", "method", "head_arch", "backend", "classes", "ms_per_image"]
    assert {(r["method"], r["classes"]) for r in rows} == {(m, c) for m in ("explainer", "reciprocam", "gradcam")
                                                           for c in ("top-1", "all")}
    assert all(r["classifier"] == "small_cnn" and float(r["ms_per_image"]) > 0 for r in rows)
    md = (tmp_path / "latency_paper_scale_cpu.md").read_text()
    assert "× lraspp_mobilenet_v3" in md and "--tiny" in md


def test_paper_scale_ratios_by_hand():
    ps = load_script("bench/paper_scale.py")
    rows = [ps.Row("resnet50", "explainer", "deeplabv3_resnet50", "torch", "all", 20.0, 224, 5, "paper defaults"),
            ps.Row("resnet50", "explainer", "lraspp_mobilenet_v3", "torch", "all", 5.0, 224, 5, "paper defaults"),
            ps.Row("resnet50", "sise", "-", "torch", "all", 4000.0, 224, 1, "paper defaults")]
    sise = next(ln for ln in ps.markdown(rows, "cmd").splitlines() if ln.startswith("| sise"))
    assert "| 4000.0 | 200.00 | 800.00 |" in sise


def test_paper_scale_merge_lists_each_command_and_what_is_missing(tmp_path):
    """A suite built in parts: each row keeps the command that measured it, and the table
    header lists both commands and the methods not measured."""
    ps = load_script("bench/paper_scale.py")
    base = ["--tiny", "--heads", "lraspp_mobilenet_v3", "--no-onnx", "--out-dir", str(tmp_path)]
    assert ps.main([*base, "--methods", "explainer,gradcam"]) == 0
    assert ps.main([*base, "--methods", "gradcam", "--merge"]) == 0
    rows = list(csv.DictReader((tmp_path / "latency_paper_scale_cpu.csv").open()))
    by_method = {r["method"]: r["command"] for r in rows}
    assert "--methods explainer,gradcam" in by_method["explainer"]
    assert by_method["gradcam"].endswith("--methods gradcam --merge")
    md = (tmp_path / "latency_paper_scale_cpu.md").read_text()
    assert "Built in parts" in md and by_method["explainer"] in md and by_method["gradcam"] in md
    assert "Not measured on small_cnn: classifier, mask_predictor, reciprocam, gradcam++, scorecam, sise, rise, extremal." in md
