"""The throughput benchmark runs (quick mode) and reports every field with sane values; no speed thresholds."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_benchmark_writes_complete_json(tmp_path):
    out = tmp_path / "throughput.json"
    result = subprocess.run([sys.executable, "benchmarks/throughput.py", "--quick", "--json", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text())
    assert results["machine"]["matmul_fp32_gflops"] > 0 and results["machine"]["threads"] >= 1
    assert results["setup"]["train_images"] == 256 and results["setup"]["timed_epochs"] == 1
    for arch in ("multistage", "singlestage"):
        row = results["archs"][arch]
        assert row["train_gflops_per_image"] > 0
        for pipeline in ("ours", "plain", "tutorial"):
            numbers = row[pipeline]
            assert len(numbers["epoch_seconds"]) == 1 and numbers["median_epoch_seconds"] > 0
            assert numbers["images_per_s"] == numbers["images_per_s"] > 0  # not NaN, positive
            assert 0 < numbers["utilisation"] < 1
        assert row["ours_over_plain"] > 0 and row["ours_over_tutorial"] > 0
    assert "ours over plain" in result.stdout
    # Training FLOPs: forward + backward is about 3x the forward MACs x 2.
    assert 2.5 < results["archs"]["singlestage"]["train_gflops_per_image"] / (2 * 0.11413) < 3.5
