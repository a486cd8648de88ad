"""A recipe option is one `Recipe` field plus the code that uses it: its flag, history.json, the resume check,
`--resume auto`, the comparability of reports and TensorBoard's HPARAMS all come from the field. Shown with
`--label-smoothing` (its effect on the numbers is checked against a plain loop in test_plain_reference.py)."""
import json

import pytest
import torch
from google.protobuf.json_format import MessageToDict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import engine.command
import run
from helpers import learning_rate, run_in_process, tensorboard_points, without_timings

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


@pytest.mark.slow
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


# The recipe fields beyond the assignment's, all away from their defaults. 100 images, batch 32: 4 iterations an epoch.
RECIPE = ["--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.8", "--nesterov", "--weight-decay", "1e-4",
          "--schedule", "cosine", "--warmup", "0.5", "--augment", "--crop-padding", "2", "--ema", "0.9", "--tta", "flip"]
RECORDED = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-4,
            "schedule": "cosine", "warmup": 0.5, "augment": True, "crop_padding": 2, "ema": 0.9, "tta": "flip"}


def recipe_args(data_dir, run_dir):
    return ["--dataset", "cifar10", "--batch-size", "32", "--no-progress", "--no-amp", "--data-dir", data_dir,
            "--epochs", "2", *RECIPE, "--output-dir", str(run_dir)]


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    """An uninterrupted two-epoch run of RECIPE: (data_dir, run_dir)."""
    from synthetic_cifar import write_cifar10

    root = tmp_path_factory.mktemp("recipe")
    data_dir = str(root / "data")
    write_cifar10(data_dir)
    result = run_in_process(recipe_args(data_dir, root / "whole"))
    assert result.returncode == 0, result.stderr
    return data_dir, root / "whole"


@pytest.mark.slow
def test_each_field_is_recorded_logged_and_evaluated(recipe_run):
    _, run_dir = recipe_run
    history = json.loads((run_dir / "history.json").read_text())
    assert {key: history["config"][key] for key in RECORDED} == RECORDED
    hparams = logged_hparams(run_dir)
    # torch's hparams() stores a boolean as the number 1.0 or 0.0.
    assert {key: hparams[key] for key in RECORDED} == pytest.approx({**RECORDED, "nesterov": 1.0, "augment": 1.0})
    last = history["epochs"][-1]
    for split in ("test", "test_ema", "test_flip"):  # the averaged weights and the flips beside the plain numbers
        assert {f"{split}_accuracy", f"{split}_top5", f"{split}_loss"} <= set(last)


@pytest.mark.parametrize("flags, message", [
    (["--optimizer", "adam"], "'optimizer' was 'sgd', now 'adam'"),
    (["--momentum", "0.9"], "'momentum' was 0.8, now 0.9"),
    (["--weight-decay", "0"], "'weight_decay' was 0.0001, now 0.0"),
    (["--schedule", "onecycle"], "'schedule' was 'cosine', now 'onecycle'"),
    (["--warmup", "1"], "'warmup' was 0.5, now 1.0"),
    (["--crop-padding", "4"], "'crop_padding' was 2, now 4"),
    (["--ema", "0.99"], "'ema' was 0.9, now 0.99"),
    (["--tta", "none"], "'tta' was 'flip', now 'none'"),
    (["--epochs", "3"], "'epochs' was 2, now 3 (the cosine schedule is laid out over the epochs: train a new run for "
                        "more)"),
])
def test_a_resume_with_another_value_is_refused(recipe_run, flags, message):
    _, run_dir = recipe_run
    refused = run_in_process(["--resume", str(run_dir), *flags])
    assert (refused.returncode, refused.stderr) == (1, f"error: cannot resume {run_dir}: {message}\n")


def test_a_resume_in_the_middle_of_the_schedule_equals_the_uninterrupted_run(recipe_run, tmp_path, monkeypatch):
    """Ctrl-C at iteration 6 (half-way through epoch 2, in the cosine), then the printed command: the history, the
    weights, the averaged weights and every iteration's learning rate equal those of the run that was not stopped."""
    import engine.build
    from fault_injection import with_fault

    data_dir, whole = recipe_run
    monkeypatch.setattr(engine.build, "build_run", with_fault(engine.build.build_run, "sigint", 6))
    stopped = run_in_process(recipe_args(data_dir, tmp_path / "run"))
    assert stopped.returncode == 130, stopped.stderr
    monkeypatch.undo()
    resumed = run_in_process(["--resume", str(tmp_path / "run")])
    assert resumed.returncode == 0, resumed.stderr
    histories = [json.loads((d / "history.json").read_text()) for d in (tmp_path / "run", whole)]
    assert without_timings(histories[0]) == without_timings(histories[1])
    first, second = (torch.load(d / "checkpoint_2.pt", weights_only=True) for d in (tmp_path / "run", whole))
    for part in ("model", "ema_model"):
        assert all(torch.equal(first[part][k], second[part][k]) for k in second[part])
    rates = [tensorboard_points(d)["train/lr"] for d in (tmp_path / "run", whole)]
    assert rates[0] == rates[1] and len(rates[1]) == 8 and rates[1][0][1] == 0.0  # the warm-up starts at 0


def test_the_schedules_follow_their_formulas(recipe_run, tmp_path):

    data_dir, whole = recipe_run
    logged = [value for _, value in tensorboard_points(whole)["train/lr"]]
    assert logged == pytest.approx([learning_rate("cosine", 0.05, i, 2, 8) for i in range(8)], rel=1e-6)  # TensorBoard keeps float32
    onecycle = tmp_path / "onecycle"
    assert run_in_process([*recipe_args(data_dir, onecycle), "--schedule", "onecycle", "--warmup", "0",
                           "--epochs", "1"]).returncode == 0
    logged = [value for _, value in tensorboard_points(onecycle)["train/lr"]]
    assert logged == pytest.approx([0.05 * (4 - i) / 4 for i in range(4)], rel=1e-6)


@pytest.mark.parametrize("flags, message", [
    (["--nesterov"], "--nesterov needs --optimizer sgd with a --momentum above 0"),
    (["--crop-padding", "2"], "--crop-padding needs --augment (without it no image is cropped)"),
])
def test_an_option_that_would_do_nothing_is_refused(cifar10_dir, tmp_path, flags, message):
    data_dir, _ = cifar10_dir
    refused = run_in_process([*COMMON, "--data-dir", data_dir, *flags, "--output-dir", str(tmp_path / "r")])
    assert (refused.returncode, refused.stderr) == (1, f"error: {message}\n")


@pytest.mark.slow
def test_a_named_recipe_expands_to_its_values_which_help_history_and_the_first_line_show(cifar10_dir, tmp_path, capsys):
    from core.recipe import PRESETS, Recipe, matching_preset

    recipe, _ = run.configs_from_args(engine.command.build_parser().parse_args(["--recipe", "fast"]))
    assert {key: getattr(recipe, key) for key in PRESETS["fast"]} == PRESETS["fast"]
    assert (recipe.optimizer, recipe.nesterov, recipe.schedule, recipe.augment) == ("sgd", True, "onecycle", True)
    given, _ = run.configs_from_args(engine.command.build_parser().parse_args(["--recipe", "fast", "--lr", "0.05"]))
    assert given.lr == 0.05 and given.optimizer == "sgd"  # a flag given beside the preset wins
    assert run.configs_from_args(engine.command.build_parser().parse_args(["--recipe", "assignment"]))[0] == Recipe()

    assert matching_preset(given) is None and matching_preset(recipe) == "fast"  # --lr 0.05: a recipe of its own

    data_dir, _ = cifar10_dir
    result = run_in_process([*COMMON, "--data-dir", data_dir, "--epochs", "3", "--recipe", "fast",
                             "--output-dir", str(tmp_path / "named")])
    assert result.returncode == 0, result.stderr
    history = json.loads((tmp_path / "named" / "history.json").read_text())
    assert history["preset"] == "fast" and history["config"]["schedule"] == "onecycle"
    first = result.stdout.splitlines()[0]
    assert first == ("Recipe fast: --optimizer sgd --lr 0.4 --momentum 0.9 --nesterov --weight-decay 0.0005 "
                     "--schedule onecycle --warmup 1.0 --label-smoothing 0.1 --augment --crop-padding 2 --ema 0.0 --tta flip")
    with pytest.raises(SystemExit):
        run.main(["--help"])
    assert "fast = --optimizer sgd --lr 0.4" in " ".join(capsys.readouterr().out.split())


def test_a_recipe_given_beside_a_preset_opens_with_the_preset_the_flags_that_differ_and_every_value():
    import dataclasses

    from core.recipe_words import recipe_line

    given, _ = run.configs_from_args(engine.command.build_parser().parse_args(["--recipe", "fast", "--lr", "0.2",
                                                                    "--crop-padding", "4"]))
    line = recipe_line(given)
    assert line.startswith("Recipe fast, but --lr 0.2 --crop-padding 4: --optimizer sgd --lr 0.2 ")
    # The values after the colon are flags that give back the same recipe.
    again, _ = run.configs_from_args(engine.command.build_parser().parse_args(line.split(": ", 1)[1].split()))
    assert again == given
    assert recipe_line(dataclasses.replace(given, nesterov=False)).startswith(
        "Recipe fast, but --lr 0.2 without --nesterov --crop-padding 4: --optimizer sgd --lr 0.2 --momentum 0.9 "
        "--weight-decay 0.0005 ")
    for nearer_the_assignment in ([], ["--augment"], ["--optimizer", "sgd", "--schedule", "cosine"]):
        recipe, _ = run.configs_from_args(engine.command.build_parser().parse_args(nearer_the_assignment))
        assert recipe_line(recipe) is None  # such a run opens with its device, as the assignment's does


def test_a_warmup_as_long_as_the_run_is_refused(cifar10_dir, tmp_path):
    data_dir, _ = cifar10_dir
    refused = run_in_process([*COMMON, "--data-dir", data_dir, "--recipe", "fast", "--epochs", "2",
                              "--warmup", "2", "--output-dir", str(tmp_path / "r")])
    assert (refused.returncode, refused.stderr) == (1, "error: --warmup 2.0 is as long as the whole run (2 epochs): "
                                                       "the onecycle schedule would never leave its warm-up\n")
