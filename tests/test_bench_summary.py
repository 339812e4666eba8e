"""The end-of-run bench summary: ms per image, ratios to the Explainer, runtime FPS."""

from __future__ import annotations

from _helpers import load_script

tables = load_script("bench/tables.py")  # not via sys.path: bench/ has its own conftest
Entry, entry_from_benchmark, summary_lines = tables.Entry, tables.entry_from_benchmark, tables.summary_lines


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


def test_tables_cli_makes_each_kind_from_one_json(tmp_path, capsys):
    """bench/tables.py: the latency, ONNX precision and runtime FPS tables of a pytest-benchmark JSON."""
    import json

    lat = {"batch": 1, "device": "cpu", "classifier": "small_cnn", "head_arch": "unet", "image_size": 64,
           "settings": "paper defaults"}
    parity = {"logits_max_abs_diff": 1e-5, "masks_max_abs_diff": 2e-6, "mask_iou": 1.0, "label_agreement": 1.0,
              "n_images": 32}
    group = "cpu | batch 1 | top-1 class"
    runtime = {"fps": 100.0, "backend": "ort", "frames": 300, "e2e_p50_ms": 10.0, "e2e_p95_ms": 12.0,
               "infer_p50_ms": 2.0, "runs": 2}
    payload = {
        "machine_info": {"machine": "x86_64", "cpu": {"brand_raw": "CPU X", "count": 2}, "python_version": "3.11"},
        "datetime": "2026-01-02T03:04:05", "version": "5.0", "benchmarks": [
            {"group": group, "name": "e", "stats": {"median": 0.004, "min": 0.003, "rounds": 5},
             "extra_info": {**lat, "method": "explainer"}},
            {"group": group, "name": "g", "stats": {"median": 0.008, "min": 0.007, "rounds": 5},
             "extra_info": {**lat, "method": "gradcam"}},
            {"group": group, "name": "c", "stats": {"median": 0.002, "min": 0.002, "rounds": 5},
             "extra_info": {**lat, "method": "classifier"}},
            {"group": "p", "name": "fp32 batch 1", "stats": {"median": 0.002, "min": 0.002, "rounds": 9},
             "extra_info": {"precision": "fp32", "batch": 1, "size_mb": 6.1, "onnxruntime": "1.0", "parity": parity}},
            {"group": "runtime", "name": "demo", "stats": {"median": 3.0, "min": 3.0, "rounds": 1},
             "extra_info": runtime}]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(payload))
    assert tables.main(["latency", str(path), "-o", str(tmp_path / "lat.md"), "--title", "T"]) == 0
    text = (tmp_path / "lat.md").read_text()
    assert text.startswith("# T\n") and "CPU X, 2 CPU threads" in text
    # × classifier: the classifier alone (2 ms) on the same backend is the yardstick
    assert "| explainer | 4.00 | 3.00 | 4.00 | 1.0× | 2.00× | 5 | paper defaults |" in text
    assert "| gradcam | 8.00 | 7.00 | 8.00 | 2.0× | 4.00× | 5 | paper defaults |" in text
    assert "| classifier | 2.00 | 2.00 | 2.00 | 0.5× | 1.00× | 5 | paper defaults |" in text
    assert "fp32 batch 1" not in text and "demo" not in text  # other benchmarks' rows stay out
    assert tables.main(["onnx_precision", str(path), "-o", str(tmp_path / "p.md")]) == 0
    text = (tmp_path / "p.md").read_text()
    assert f"`python bench/tables.py onnx_precision X -o {tmp_path / 'p.md'}`" in text
    assert "| fp32 | 6.10 | 2.00 | nan | 1.0e-05 | 2.0e-06 | 1.000 | 100.0 % |" in text and "parity on 32" in text
    capsys.readouterr()
    assert tables.main(["runtime_fps", str(path)]) == 0
    assert "| demo | ort | 2 | 300 | 100.0 | – | – | – | – | 10.0 / 12.0 | 2.0 | – |" in capsys.readouterr().out
    assert tables.main(["latency", str(tmp_path / "missing.json")]) == 2
    assert tables.main(["runtime_fps", str(tmp_path / "lat.md")]) == 2  # not JSON


def test_tables_models_reads_sizes_and_recorded_metrics(tiny_explainer, tmp_path):
    """``tables.py models``: each checkpoint's networks with their parameters (millions, counted
    on the networks its spec builds) and every metric it records, nested ones flattened."""
    from wysiwyc.checkpoint import load_checkpoint, save_checkpoint
    from wysiwyc.models.classifiers import build_classifier
    from wysiwyc.models.fused import build_head

    ck = load_checkpoint(tiny_explainer)
    path = save_checkpoint(tmp_path / "m.pt", ck.spec, ck.classifier, head=ck.head,
                           metrics={"val_iou": 0.81234567, "stages": {"filter": {"epoch": 1}}})
    n_clf = sum(t.numel() for t in build_classifier("small_cnn", 6).parameters())
    n_head = sum(t.numel() for t in build_head(ck.spec).parameters())
    assert n_head == sum(t.numel() for k, t in ck.head.items() if "running" not in k and "num_batches" not in k)
    assert tables.main(["models", str(path), "-o", str(tmp_path / "m.md")]) == 0
    text = (tmp_path / "m.md").read_text()
    assert f"| classifier parameters (M) | {n_clf / 1e6:.2f} |" in text
    assert f"| head parameters (M) | {n_head / 1e6:.2f} |" in text
    assert "| val_iou | 0.8123 |" in text and "| stages.filter.epoch | 1 |" in text


def test_runtime_fps_rows_are_the_median_of_paired_runs(capsys, tmp_path):
    """A case run several times reports the run with the median ratio (its FPS and yardstick
    together, not medians taken apart) and the range of the ratios."""
    import json

    fps_bench = load_script("bench/test_runtime_fps.py")
    runs = iter([{"fps": 90.0, "model_only_fps": 100.0, "ratio": 0.90}, {"fps": 70.0, "model_only_fps": 100.0,
                 "ratio": 0.70}, {"fps": 84.0, "model_only_fps": 105.0, "ratio": 0.80}])
    row = fps_bench._median_run(lambda: next(runs), 3)
    assert (row["fps"], row["model_only_fps"], row["ratio"], row["ratio_runs"]) == (84.0, 105.0, 0.80,
                                                                                   [0.7, 0.8, 0.9])
    extra = {**row, "backend": "ort", "frames": 300, "e2e_p50_ms": 10.0, "e2e_p95_ms": 12.0, "infer_p50_ms": 2.0}
    payload = {"machine_info": {"machine": "x86_64", "cpu": {"brand_raw": "CPU X", "count": 2}},
               "datetime": "2026-01-02", "benchmarks": [{"name": "demo", "extra_info": extra}]}
    path = tmp_path / "b.json"
    path.write_text(json.dumps(payload))
    assert tables.main(["runtime_fps", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| demo | ort | 1 | 300 | 84.0 | 105.0 | 0.80 (0.70–0.90) |" in out and "median of 3 runs" in out
