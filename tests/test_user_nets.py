"""`--arch MODULE:CALLABLE` and `--arch FILE.py:CALLABLE`: a user's own network, checked before anything is written,
recorded (spec, file, hash), trained, resumed, re-tested and compared like the registry's nets."""
import hashlib
import json
import os
import sys
import textwrap

import pytest
import torch
from torch import nn

import run
from models import ARCHITECTURES, build_model
from helpers import run_in_process, runs_of
from models.stats import measured_receptive_field, receptive_field

COMMON = ["--dataset", "cifar10", "--batch-size", "32", "--no-progress", "--no-amp"]

# A small net of the user's own: not in the registry, with a docstring that reports show.
TINY_NET = '''
from torch import nn


class TinyNet(nn.Module):
    """a tiny net: two 3x3 convolutions and a linear layer"""

    def __init__(self, num_classes, width=8):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.head(self.features(x))
'''


@pytest.fixture(autouse=True)
def own_import_state(monkeypatch):
    """A module spec puts the working directory on sys.path and the module into sys.modules: undone after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name in [name for name in sys.modules if name.split(".")[0] in ("mynets", "mypkg") or name.startswith("user_net_")]:
        del sys.modules[name]


def write(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return os.path.abspath(path)


def history(run_dir):
    with open(os.path.join(run_dir, "history.json")) as f:
        return json.load(f)


# --- the receptive field by gradient ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_gradient_receptive_field_equals_the_analytic_one_on_the_registry(arch, blocks):
    model = build_model(arch, 10, blocks_per_stage=blocks)
    assert measured_receptive_field(model).pixels == receptive_field(model)


def test_gradient_receptive_field_of_plain_stacks():
    def stack(*layers):
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))

    assert measured_receptive_field(stack(nn.Conv2d(3, 4, 5, padding=2))).pixels == 5
    # 3 + 2 * 2 (a stride-2 conv doubles the step of the next): 7
    assert measured_receptive_field(stack(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))).pixels == 7
    assert measured_receptive_field(stack(nn.Conv2d(3, 4, 3, dilation=4, padding=4))).pixels == 9


@pytest.mark.slow
def test_no_receptive_field_where_none_can_be_measured_exactly():
    pooled = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(4, 10))
    assert measured_receptive_field(pooled).pixels is None
    assert "max pooling" in measured_receptive_field(pooled).why
    # Twenty 3x3 convolutions see 41 px, more than 32, and the flattening head takes nothing but 32x32 images.
    only_32 = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 2, 2, 3, padding=1) for i in range(20)], nn.Flatten(),
                            nn.Linear(2 * 32 * 32, 10))
    assert measured_receptive_field(only_32).why == "its field reaches past a 32-px image, and it takes no 64-px image"
    examples = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
    sys.path.insert(0, examples)
    from se_resnet import SEResNet

    assert measured_receptive_field(SEResNet(10)).why.endswith(": a global operation")


# --- refusals: one line, exit 1, nothing written ------------------------------------------------------------------


BROKEN = {
    "syntax.py": "def f(:\n",
    "imports.py": "import numpy\nimport no_such_package_here\n",
    "things.py": '''
        import torch
        from torch import nn
        NUMBER = 3
        def Fails(num_classes):
            raise RuntimeError("no way")
        def Text(num_classes):
            return "a net"
        class Broken(nn.Module):
            def __init__(self, num_classes):
                super().__init__()
                self.linear = nn.Linear(3, num_classes)
            def forward(self, x):
                return self.linear(x)
        def Narrow(num_classes):
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5))
        def Frozen(num_classes):
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, num_classes)).requires_grad_(False)
        ''',
}


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_here:Net", "error: no module named 'no_such_module_here'; searched "),
    ("missing/nets.py:Net", "error: no such file: missing/nets.py"),
    ("broken/syntax.py:f", "error: importing broken/syntax.py failed: SyntaxError: invalid syntax ({file}, line 1)"),
    ("broken/imports.py:Net", "error: importing broken/imports.py failed: ModuleNotFoundError: No module named "
                              "'no_such_package_here' ({file}, line 2)"),
    ("broken/things.py:Nothing", "error: broken/things.py:Nothing: {file} has no attribute 'Nothing'"),
    ("broken/things.py:NUMBER", "error: broken/things.py:NUMBER: NUMBER is a int, not a class or function"),
    ("broken/things.py:Fails", "error: broken/things.py:Fails: calling it with num_classes=10 failed: RuntimeError: no way"),
    ("broken/things.py:Text", "error: broken/things.py:Text: returned a str, not a torch.nn.Module"),
    ("broken/things.py:Broken", "error: broken/things.py:Broken: a forward pass of one 32x32 image failed: RuntimeError: "),
    ("broken/things.py:Narrow", "error: broken/things.py:Narrow: one 32x32 image gave output (1, 5), expected (1, 10) logits"),
    ("broken/things.py:Frozen", "error: broken/things.py:Frozen: the network has no trainable parameters"),
])
def test_a_network_that_cannot_train_is_refused_in_one_line(spec, message, capsys):
    for name, text in BROKEN.items():
        write(os.path.join("broken", name), text)
    file = os.path.abspath(spec.rpartition(":")[0])
    assert run.main(["--arch", spec, *COMMON]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message.format(file=file)), err
    assert len(err.strip().splitlines()) == 1
    assert not os.path.exists("runs")  # nothing written: no run directory


def test_the_forward_failure_names_the_line_of_the_users_code(capsys):
    file = write(os.path.join("broken", "things.py"), BROKEN["things.py"])
    assert run.main(["--arch", "broken/things.py:Broken", *COMMON]) == 1
    assert f"({file}, line 14)" in capsys.readouterr().err


def test_debug_shows_the_traceback_of_a_broken_module():
    write("syntax.py", BROKEN["syntax.py"])
    with pytest.raises(Exception, match="SyntaxError"):
        run.main(["--arch", "syntax.py:f", *COMMON, "--debug"])


def test_a_module_of_a_package_resolves_with_its_relative_imports():
    from models import user_nets

    write("mypkg/__init__.py", "")
    write("mypkg/layers.py", "from torch import nn\nWIDTH = 8\n")
    write("mypkg/nets.py", TINY_NET.replace("width=8", "width=None").replace(
        "super().__init__()", "super().__init__()\n        from .layers import WIDTH\n        width = width or WIDTH"))
    net = user_nets.load("mypkg.nets:TinyNet")
    assert net.file == os.path.abspath("mypkg/nets.py") and net.description.startswith("a tiny net")
    assert tuple(user_nets.check(net, 10)(torch.zeros(2, 3, 32, 32)).shape) == (2, 10)


def test_a_models_py_of_ones_own_is_found_before_the_engines_models_package():
    """`models.py` is what most people call such a file; it is loaded under a private name, so that the engine's own
    `models` package stays what it is, and so does a folder without __init__.py (a namespace package)."""
    import models
    from models import user_nets

    write("models.py", TINY_NET)
    net = user_nets.load("models:TinyNet")
    assert net.file == os.path.abspath("models.py") and net.description.startswith("a tiny net")
    assert tuple(user_nets.check(net, 10)(torch.zeros(2, 3, 32, 32)).shape) == (2, 10)
    assert sys.modules["models"] is models and "TinyNet" not in vars(models)
    write("loose/nets.py", TINY_NET)  # no loose/__init__.py
    assert user_nets.load("loose.nets:TinyNet").file == os.path.abspath("loose/nets.py")


@pytest.mark.parametrize("spec, file", [("models:MyNet", "models/__init__.py"),
                                        ("engine.session:train", "engine/session.py")])
def test_a_name_that_only_the_engine_has_is_refused_with_the_file_form(spec, file, capsys):
    module_part, _, attribute = spec.partition(":")
    top, engine_file = module_part.split(".")[0], os.path.join(os.path.dirname(os.path.abspath(run.__file__)), file)
    assert run.main(["--arch", spec, *COMMON]) == 1
    assert capsys.readouterr().err == (
        f"error: {spec}: {module_part} is this engine's own {engine_file}, and neither the working directory nor "
        f"PYTHONPATH holds a {top}.py or {top}/ of yours; name your file by its path instead: "
        f"--arch path/to/{module_part.replace('.', '/')}.py:{attribute}\n")
    assert not os.path.exists("runs")


def test_blocks_per_stage_is_refused_for_a_net_without_that_parameter(capsys):
    write("tiny.py", TINY_NET)
    assert run.main(["--arch", "tiny.py:TinyNet", "--blocks-per-stage", "3", *COMMON]) == 1
    assert capsys.readouterr().err == "error: --blocks-per-stage: tiny.py:TinyNet takes no blocks_per_stage parameter\n"


def test_two_nets_with_one_folder_name_are_refused(capsys):
    write("a/nets.py", TINY_NET)
    write("b/nets.py", TINY_NET)
    assert run.main(["--compare", "a/nets.py:TinyNet", "b/nets.py:TinyNet", *COMMON]) == 1
    assert capsys.readouterr().err == ("error: two networks would share the folder name 'TinyNet': a/nets.py:TinyNet "
                                       "and b/nets.py:TinyNet\n")


# --- trained, recorded, resumed, re-tested ------------------------------------------------------------------------


def test_a_module_spec_trains_and_records_spec_file_and_hash(cifar10_dir, capsys):
    data_dir, _ = cifar10_dir
    file = write("mynets.py", TINY_NET)
    assert run.main(["--arch", "mynets:TinyNet", "--data-dir", data_dir, "--epochs", "1", *COMMON]) == 0
    (run_dir,) = [os.path.join("runs", name) for name in os.listdir("runs")]
    assert os.path.basename(run_dir).startswith("cifar10-TinyNet-seed0-")  # the callable's name, no bps, no path
    recorded = history(run_dir)
    assert recorded["config"]["arch"] == "mynets:TinyNet"
    with open(file, "rb") as f:
        assert recorded["network"] == {"spec": "mynets:TinyNet", "file": file,
                                       "sha256": hashlib.sha256(f.read()).hexdigest()}
    assert recorded["status"] == "completed"
    assert recorded["parameters"] == sum(p.numel() for p in torch.nn.Module.parameters(_tiny(10)))


@pytest.mark.slow
def test_a_package_of_ones_own_named_models_trains_with_its_relative_imports_and_evaluates_from_elsewhere(
        cifar10_dir, tmp_path, monkeypatch, capsys):
    """A clone of a peer repository: `models/` with an __init__.py that imports its modules relatively, as
    kuangliu/pytorch-cifar's does, named `--arch models.resnet:TinyNet` from the folder that holds it."""
    data_dir, _ = cifar10_dir
    write("models/__init__.py", "from .resnet import *\n")
    write("models/layers.py", "WIDTH = 8\n")
    file = write("models/resnet.py", TINY_NET.replace("width=8", "width=None").replace(
        "super().__init__()", "super().__init__()\n        from .layers import WIDTH\n        width = width or WIDTH"))
    run_dir = str(tmp_path / "run")
    assert run.main(["--arch", "models.resnet:TinyNet", "--data-dir", data_dir, "--epochs", "1", *COMMON,
                     "--output-dir", run_dir]) == 0, capsys.readouterr().err
    recorded = history(run_dir)
    assert recorded["network"]["file"] == file and recorded["status"] == "completed"
    assert recorded["parameters"] == sum(p.numel() for p in _tiny(10).parameters())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # here `models` is only the engine's: the recorded file and its package stand in
    result = run_in_process(["--evaluate", run_dir])
    assert result.returncode == 0, result.stderr
    with open(os.path.join(run_dir, "evaluation-checkpoint_1", "evaluation.json")) as f:
        assert json.load(f)["metrics"]["test_accuracy"] == recorded["epochs"][-1]["test_accuracy"]


def _tiny(num_classes):
    namespace = {}
    exec(TINY_NET, namespace)
    return namespace["TinyNet"](num_classes)


def test_a_file_spec_trains_resumes_and_refuses_a_changed_file(cifar10_dir, tmp_path, capsys):
    data_dir, _ = cifar10_dir
    file = write("nets/tiny.py", TINY_NET)
    run_dir = str(tmp_path / "run")
    spec = ["--arch", "nets/tiny.py:TinyNet", "--data-dir", data_dir, *COMMON, "--output-dir", run_dir]
    assert run.main([*spec, "--epochs", "1"]) == 0
    assert run.main(["--resume", run_dir, "--epochs", "2", "--no-progress"]) == 0
    assert [e["epoch"] for e in history(run_dir)["epochs"]] == [1, 2]
    capsys.readouterr()
    write(file, TINY_NET.replace("width=8", "width=4"))
    assert run.main(["--resume", run_dir, "--epochs", "3", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot resume {run_dir}: the network file {file} of nets/tiny.py:TinyNet changed "
                          "since the run trained (sha256 was "), err
    assert [e["epoch"] for e in history(run_dir)["epochs"]] == [1, 2]


def test_evaluate_from_another_working_directory_and_after_a_change(cifar10_dir, tmp_path, monkeypatch, capsys):
    data_dir, _ = cifar10_dir
    file = write("nets/tiny.py", TINY_NET)
    run_dir = str(tmp_path / "run")
    assert run.main(["--arch", "nets/tiny.py:TinyNet", "--data-dir", data_dir, "--epochs", "1", *COMMON,
                     "--output-dir", run_dir]) == 0
    final = history(run_dir)["epochs"][-1]["test_accuracy"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # nets/tiny.py does not resolve from here: the recorded file stands in
    result = run_in_process(["--evaluate", run_dir])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert f"Test accuracy {100 * final:.2f}%" in result.stdout
    # A changed file: a warning, and the re-test goes on (the weights still fit).
    write(file, TINY_NET.replace('"""a tiny net', '"""a tiny net, edited'))
    result = run_in_process(["--evaluate", run_dir])
    assert result.returncode == 0, result.stderr
    assert "changed since the run trained" in result.stderr and "re-testing with the file as it is now" in result.stderr
    # Changed so that the weights no longer fit: refused by the checkpoint's load, in one line.
    write(file, TINY_NET.replace("width=8", "width=4"))
    result = run_in_process(["--evaluate", run_dir])
    assert result.returncode == 1
    assert "its weights do not fit nets/tiny.py:TinyNet" in result.stderr


def test_ema_tta_and_the_graph_work_on_a_users_net(cifar10_dir, tmp_path):
    data_dir, _ = cifar10_dir
    write("tiny.py", TINY_NET)
    run_dir = str(tmp_path / "run")
    assert run.main(["--arch", "tiny.py:TinyNet", "--data-dir", data_dir, "--epochs", "1", "--ema", "0.9", "--tta",
                     "flip", "--log-graph", *COMMON, "--output-dir", run_dir]) == 0
    record = history(run_dir)["epochs"][-1]
    assert {"test_ema_accuracy", "test_flip_accuracy"} <= set(record)


@pytest.mark.slow
def test_a_three_net_study_with_a_users_net_has_its_ablation(cifar10_dir, tmp_path):
    data_dir, _ = cifar10_dir
    write("nets/tiny.py", TINY_NET)
    study_dir = tmp_path / "study"
    result = run_in_process(["--compare", "singlestage", "multistage-narrow", "nets/tiny.py:TinyNet", "--seeds", "0", "1",
                             "--data-dir", data_dir, "--epochs", "1", *COMMON, "--output-dir", str(study_dir)])
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(study_dir / "seed0")) == ["TinyNet", "comparison.json", "curves.png", "multistage-narrow",
                                                       "report.json", "report.md", "singlestage"]
    report = json.loads((study_dir / "seed0" / "report.json").read_text())
    facts = runs_of(report)["nets/tiny.py:TinyNet"]["model"]
    assert facts == {"parameters": sum(p.numel() for p in _tiny(10).parameters()), "macs_per_image": facts["macs_per_image"],
                     "receptive_field": 5, "description": "a tiny net: two 3x3 convolutions and a linear layer"}
    markdown = (study_dir / "seed0" / "report.md").read_text()
    assert "- **nets/tiny.py:TinyNet**: a tiny net: two 3x3 convolutions and a linear layer" in markdown
    study = json.loads((study_dir / "study.json").read_text())
    assert study["ablation"]["properties"]["nets/tiny.py:TinyNet"]["receptive_field"] == 5
    assert "TinyNet" in (study_dir / "study.md").read_text()
