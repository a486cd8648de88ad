"""A recipe option is one `Recipe` field plus the code that uses it: its flag, history.json, the resume check,
`--resume auto`, the comparability of reports and TensorBoard's HPARAMS all come from the field. Shown with
`--label-smoothing` (its effect on the numbers is checked against a plain loop in test_plain_reference.py)."""
import json

import pytest
from google.protobuf.json_format import MessageToDict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import run
from test_resume import run_in_process

COMMON = ["--dataset", "cifar10", "--batch-size", "50", "--no-progress", "--no-amp"]


def logged_hparams(run_dir) -> dict:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = MessageToDict(plugin_data_pb2.HParamsPluginData.FromString(content))["sessionStartInfo"]["hparams"]
    return info  # name -> value (protobuf Values become plain numbers, strings and booleans)


@pytest.fixture
def smoothed_run(cifar10_dir, tmp_path):
    data_dir, _ = cifar10_dir
    run_dir = tmp_path / "runs" / "smoothed"
    result = run_in_process([*COMMON, "--data-dir", data_dir, "--epochs", "1", "--label-smoothing", "0.1",
                             "--output-dir", str(run_dir)])
    assert result.returncode == 0, result.stderr
    return data_dir, run_dir


def test_the_field_is_recorded_and_logged(smoothed_run):
    _, run_dir = smoothed_run
    assert json.loads((run_dir / "history.json").read_text())["config"]["label_smoothing"] == 0.1
    assert logged_hparams(run_dir)["label_smoothing"] == pytest.approx(0.1)


def test_a_resume_with_another_value_is_refused_and_auto_does_not_pick_the_run(smoothed_run):
    data_dir, run_dir = smoothed_run
    refused = run_in_process([*COMMON, "--data-dir", data_dir, "--epochs", "2", "--label-smoothing", "0.2",
                              "--resume", str(run_dir)])
    assert refused.returncode == 1
    assert refused.stderr == f"error: cannot resume {run_dir}: 'label_smoothing' was 0.1, now 0.2\n"
    auto = run_in_process([*COMMON, "--data-dir", data_dir, "--epochs", "2", "--runs-root", str(run_dir.parent),
                           "--resume", "auto"])  # the default recipe: no smoothing
    assert auto.returncode == 1 and "no run under" in auto.stderr
    kept = run_in_process([*COMMON, "--data-dir", data_dir, "--epochs", "2", "--resume", str(run_dir)])
    assert kept.returncode == 0, kept.stderr  # not given again: the recorded value
    assert json.loads((run_dir / "history.json").read_text())["config"]["label_smoothing"] == 0.1


def test_runs_with_different_values_are_not_compared(smoothed_run, tmp_path):
    data_dir, run_dir = smoothed_run
    other = tmp_path / "runs" / "plain"
    assert run_in_process([*COMMON, "--data-dir", data_dir, "--epochs", "1", "--arch", "singlestage",
                           "--output-dir", str(other)]).returncode == 0
    refused = run_in_process(["--report", str(run_dir), str(other)])
    assert refused.returncode == 1
    assert refused.stderr == ("error: the runs are not comparable: 'label_smoothing' differs "
                              "(singlestage: 0.0, multistage: 0.1)\n")


@pytest.mark.parametrize("value", ["1", "-0.1", "x"])
def test_values_outside_zero_to_one_are_refused(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--label-smoothing", value])
    assert exit_info.value.code == 2 and "argument --label-smoothing" in capsys.readouterr().err
