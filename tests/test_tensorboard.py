"""What a user sees in TensorBoard: read with EventAccumulator, and through the real TensorBoard server."""
import importlib.util
import json
import subprocess
import sys
import time
import urllib.request

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import run
from helpers import free_port, read_history

SCALAR_TAGS = {"train/loss_iter", "train/loss_epoch", "train/lr", "test/accuracy", "test/top5", "test/loss",
               "train_eval/accuracy", "train_eval/loss", "perf/images_per_s", "hparam/test_accuracy",
               "hparam/train_loss", "hparam/gap_accuracy"}


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """Two runs: `full` (2 epochs, graph and histograms) and `resumed` (1 epoch, then resumed to 2)."""
    from synthetic_cifar import write_cifar10

    root = tmp_path_factory.mktemp("tb")
    data_dir = str(root / "data")
    write_cifar10(data_dir)
    logs = root / "runs"
    common = ["--dataset", "cifar10", "--data-dir", data_dir, "--batch-size", "32", "--train-eval", "40", "--no-progress", "--no-amp"]
    assert run.main([*common, "--epochs", "2", "--log-graph", "--log-histograms",
                     "--output-dir", str(logs / "cifar10-multistage-full")]) == 0
    assert run.main([*common, "--epochs", "1", "--output-dir", str(logs / "cifar10-multistage-resumed")]) == 0
    assert run.main([*common, "--epochs", "2", "--resume", str(logs / "cifar10-multistage-resumed")]) == 0
    return logs


@pytest.mark.slow
def test_event_files_hold_every_kind_of_summary(logdir):
    events = EventAccumulator(str(logdir / "cifar10-multistage-full"), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert SCALAR_TAGS <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("test/accuracy")] == [1, 2]  # epoch-level: indexed by epoch
    assert [e.step for e in events.Scalars("train/loss_iter")] == list(range(1, 9))  # by iteration
    history = read_history(str(logdir / "cifar10-multistage-full"))
    assert events.Scalars("hparam/test_accuracy")[0].value == pytest.approx(history["final"]["test_accuracy"])
    assert "test/misclassified" in tags["images"]
    assert {"weights/stem/0/weight", "grads/stem/0/weight"} <= set(tags["histograms"])
    assert tags["graph"]
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| arch | multistage |" in text and "| lr | 0.001 |" in text


def get(url, body=None):
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_what_the_real_tensorboard_server_shows(logdir):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/data"
    try:
        deadline = time.monotonic() + 300  # a loaded machine starts TensorBoard slowly; only a hang ends here
        runs = None
        while time.monotonic() < deadline:
            try:
                runs = get(f"{base}/runs")
                if len(runs) == 2:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert sorted(runs) == ["cifar10-multistage-full", "cifar10-multistage-resumed"]

        tags = get(f"{base}/plugin/scalars/tags")
        for name in runs:
            assert SCALAR_TAGS <= set(tags[name])
            for tag in ("train/loss_epoch", "test/accuracy"):
                points = get(f"{base}/plugin/scalars/scalars?run={name}&tag={tag}")
                assert [step for _, step, _ in points] == [1, 2]  # one point per epoch, also after a resume
        iterations = get(f"{base}/plugin/scalars/scalars?run=cifar10-multistage-resumed&tag=train/loss_iter")
        assert [step for _, step, _ in iterations] == list(range(1, 9))

        plugins = get(f"{base}/plugins_listing")
        assert all(plugins[name]["enabled"] for name in ("scalars", "images", "text", "hparams", "graphs", "histograms"))
        assert "test/misclassified" in get(f"{base}/plugin/images/tags")["cifar10-multistage-full"]
        groups = get(f"{base}/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
            "colParams": [], "startIndex": 0, "sliceSize": 100})["sessionGroups"]
        listed = {group["name"]: group for group in groups}
        assert set(listed) == set(runs)
        full = listed["cifar10-multistage-full"]
        assert full["hparams"]["arch"] == "multistage" and full["hparams"]["lr"] == pytest.approx(0.001)
        assert full["hparams"]["precision"] == "float32"  # these runs are --no-amp
        metrics = {m["name"]["tag"]: m["value"] for m in full["metricValues"]}
        history = read_history(str(logdir / "cifar10-multistage-full"))
        assert metrics["hparam/test_accuracy"] == pytest.approx(history["final"]["test_accuracy"])
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
