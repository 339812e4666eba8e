"""The end-of-run bench summary: ms per image, ratios to the Explainer, runtime FPS."""

from __future__ import annotations

from _helpers import load_script

_summary = load_script("bench/_summary.py")  # not via sys.path: bench/ has its own conftest
Entry, entry_from_benchmark, summary_lines = _summary.Entry, _summary.entry_from_benchmark, _summary.summary_lines


def test_summary_ratios_and_fps():
    g, rt = "cpu | batch 16 | top-1 class", "runtime | cpu | end to end, --demo stream"
    lines = summary_lines([
        Entry(g, "gradcam", 0.160, batch=16),               # 10 ms per image
        Entry(g, "explainer", 0.040, batch=16),             # 2.5 ms per image
        Entry(g, "rise", 34.0, batch=1),
        Entry(rt, "demo explainer batch≤8", 2.0, extra={"fps": 150.0, "e2e_p50_ms": 12.5}),
        Entry(rt, "lraspp batch≤1", 9.0, extra={"fps": 16.6}),
    ])
    body = "\n".join(lines)
    assert f"{g}:" in lines and f"{rt}:" in lines
    explainer = next(x for x in lines if x.strip().startswith("explainer"))
    gradcam = next(x for x in lines if x.strip().startswith("gradcam"))
    rise = next(x for x in lines if x.strip().startswith("rise"))
    assert "2.5 ms/img" in explainer and "1.00×" in explainer
    assert "10 ms/img" in gradcam and "4.00×" in gradcam
    assert "34000 ms/img" in rise and "13600.00×" in rise
    assert lines.index(explainer) < lines.index(gradcam) < lines.index(rise)  # fastest first
    assert "150.0 FPS" in body and "end-to-end p50 12.5 ms" in body and "16.6 FPS" in body


def test_precision_group_uses_fp32_batch_1_and_no_reference_means_no_ratio():
    lines = summary_lines([Entry("p", "int8 batch 1", 0.002), Entry("p", "fp32 batch 1", 0.004),
                           Entry("q", "gradcam", 0.01)])
    assert any("int8 batch 1" in x and "0.50×" in x for x in lines)
    assert any("gradcam" in x and "×" not in x for x in lines)


def test_entry_from_a_pytest_benchmark_record():
    class Stats:
        rounds, median = 3, 0.5

    class Bench:
        group, name, stats = "g", "test_latency[cpu-rise-16-top-1 class]", Stats()
        extra_info = {"method": "rise", "batch": 16, "settings": "reduced"}

    e = entry_from_benchmark(Bench())
    assert (e.name, e.batch, round(e.ms_per_image, 3)) == ("rise (reduced)", 16, 31.25)
    Bench.stats = None
    assert entry_from_benchmark(Bench()) is None
