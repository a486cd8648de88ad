"""examples/assignment.ipynb, the committed file itself, executed by a real Jupyter kernel on a tiny CIFAR-10 in the
official layout (its ASSIGNMENT_* parameters): what a student sees is checked against what the runs wrote."""
import json
import os

import pytest
from helpers import REPO, read_history, runs_of

NOTEBOOK = os.path.join(REPO, "examples", "assignment.ipynb")


def outputs(cell) -> list[tuple[str, str]]:
    """(kind, text) of each output of a cell: "stream", "text/markdown", "image/png", "error", ..."""
    found = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            found.append(("stream", output["text"]))
        elif output["output_type"] == "error":
            found.append(("error", f"{output['ename']}: {output['evalue']}"))
        else:
            found += [(kind, data if isinstance(data, str) else "") for kind, data in output.get("data", {}).items()]
    return found


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook run top to bottom in a folder of its own, and that folder."""
    import nbclient
    import nbformat

    from synthetic_cifar import write_cifar10

    folder = tmp_path_factory.mktemp("notebook")
    write_cifar10(str(folder / "tiny"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    env = {"ASSIGNMENT_DATASET": "cifar10", "ASSIGNMENT_DATA_DIR": str(folder / "tiny"), "ASSIGNMENT_TINY": "1"}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(folder)}}).execute()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return notebook, folder


def cell_with(notebook, source_part: str):
    (cell,) = [cell for cell in notebook.cells if cell.cell_type == "code" and source_part in cell.source]
    return cell


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom_without_an_error(executed):
    notebook, _ = executed
    errors = [text for cell in notebook.cells for kind, text in outputs(cell) if kind == "error"]
    assert errors == []
    assert all(cell.execution_count for cell in notebook.cells if cell.cell_type == "code")


@pytest.mark.slow
def test_it_shows_the_networks_from_the_package_with_their_facts(executed):
    from models import model_facts

    notebook, _ = executed
    (source,) = [text for kind, text in outputs(cell_with(notebook, "inspect.getsource")) if kind == "stream"]
    assert "class DownSamplingBlock(nn.Module):" in source and "class MultiStageResNet(nn.Module):" in source
    (table,) = [text for kind, text in outputs(cell_with(notebook, "model_facts(")) if kind == "text/markdown"]
    for name in ("singlestage", "multistage"):
        facts = model_facts(name, 100, 2)[1]
        assert f"(`{name}`) | {facts['parameters']:,} | " in table and f"| {facts['receptive_field']} px |" in table


@pytest.mark.slow
def test_it_shows_the_mean_training_loss_of_every_epoch_and_the_test_accuracy_of_the_run(executed):
    notebook, folder = executed
    cell = cell_with(notebook, "mean training loss")
    (table,) = [text for kind, text in outputs(cell) if kind == "text/markdown"]
    (said,) = [text for kind, text in outputs(cell) if kind == "stream"]
    (run_dir,) = (folder / "runs").glob("cifar10-multistage-*")
    history = read_history(str(run_dir))
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    assert [(int(row[0].strip("| ")), row[1]) for row in rows] == [
        (e["epoch"], f"{e['train_loss']:.4f}") for e in history["epochs"]]
    assert len(rows) == 2
    assert said == (f"Test accuracy on the {history['num_test']} test images after 2 epochs: "
                    f"{100 * history['epochs'][-1]['test_accuracy']:.2f} %\n")
    run_cell = outputs(cell_with(notebook, "run = train("))
    assert [line for kind, text in run_cell if kind == "stream" for line in text.splitlines()
            if line.startswith("Epoch ")][-1].startswith("Epoch   2/2  train loss")
    assert any(kind == "application/vnd.jupyter.widget-view+json" for kind, _ in run_cell)  # the progress bar
    assert not [text for kind, text in run_cell if kind == "stream" and "Warning" in text]


@pytest.mark.slow
def test_the_bonus_shows_its_verdict_with_the_evidence_and_the_curves_inline(executed):
    notebook, folder = executed
    (bonus_dir,) = (folder / "runs").glob("cifar10-bonus-*")
    report = json.loads((bonus_dir / "report.json").read_text())
    kinds = dict(outputs(cell_with(notebook, "display(Markdown(bonus.markdown))")))
    assert kinds["text/markdown"] == (bonus_dir / "report.md").read_text().replace("![curves](curves.png)", "").rstrip() + "\n"
    verdict = report["contrasts"]["multistage"]["verdict"]
    assert f"## Verdict: {verdict['verdict']} (confidence: {verdict['confidence']})" in kinds["text/markdown"]
    assert "Numbers that decided" in kinds["text/markdown"]
    assert "image/png" in kinds and "![curves]" not in kinds["text/markdown"]


@pytest.mark.slow
def test_tensorboard_shows_inline_and_the_install_cell_keeps_what_is_installed(executed):
    notebook, _ = executed
    shown = dict(outputs(cell_with(notebook, "%load_ext tensorboard")))  # TensorBoard itself, started by the magic
    assert '<iframe id="tensorboard-frame-' in shown["text/html"], shown
    assert outputs(cell_with(notebook, "importlib.metadata.distribution")) == []  # installed: nothing to do


# --- the Python entry point the notebook calls (run.train, run.compare) ---------------------------------------------

def test_keywords_are_the_flags_of_the_same_fields():
    import run

    assert run.flags_of({"arch": "singlestage", "epochs": 3, "augment": True, "nesterov": False, "amp": False,
                         "progress": False, "download": True, "output_dir": None, "lr": 0.01, "seeds": [0, 1]}) == [
        "--arch", "singlestage", "--epochs", "3", "--augment", "--no-amp", "--no-progress", "--lr", "0.01",
        "--seeds", "0", "1"]
    assert run.flags_of({"amp": True}) == ["--amp"] and run.flags_of({"amp": "fp16"}) == ["--amp", "fp16"]


@pytest.mark.parametrize("keywords, message", [
    ({"epochs": 0}, "argument --epochs: must be at least 1, got 0"),
    ({"epoch": 3}, "unknown argument epoch=; the arguments are the flags' names: arch, dataset, "),
    ({"augment": "yes"}, "argument augment=: expected True or False, got 'yes'"),
    ({"arch": "resnet"}, "argument --arch: unknown network 'resnet'"),
    ({"seeds": [0, 1]}, "train() trains one run; several seeds or nets are compare()'s"),
])
def test_a_wrong_argument_raises_the_commands_line_and_exits_nothing(keywords, message):
    import run
    from core.errors import UserError

    with pytest.raises(UserError) as raised:
        run.train(**keywords)
    assert str(raised.value).startswith(message)


@pytest.mark.slow
def test_train_and_compare_write_what_the_command_writes(cifar10_dir, tmp_path):
    """train(...) and compare(...) in this process against the command with the same flags: equal histories and
    reports; what they return is what they wrote."""
    import run
    from core.errors import UserError
    from helpers import cli, timeless

    data_dir, _ = cifar10_dir
    common = {"dataset": "cifar10", "data_dir": data_dir, "epochs": 2, "batch_size": 32, "amp": False,
              "progress": False}
    flags = ["--dataset", "cifar10", "--data-dir", data_dir, "--epochs", "2", "--batch-size", "32"]
    trained = run.train(arch="singlestage", output_dir=str(tmp_path / "api"), **common)
    assert cli(*flags, "--arch", "singlestage", "--output-dir", str(tmp_path / "cli")) == 0
    assert trained.directory == str(tmp_path / "api") and trained.history == read_history(trained.directory)
    assert timeless(trained.history["epochs"]) == timeless(read_history(str(tmp_path / "cli"))["epochs"])
    with pytest.raises(UserError, match="already exists"):  # what the command refuses, raised, not printed
        run.train(arch="singlestage", output_dir=str(tmp_path / "api"), **common)

    compared = run.compare("singlestage", "multistage", train_eval=40, output_dir=str(tmp_path / "compared"), **common)
    assert compared.directory == str(tmp_path / "compared")
    assert compared.report == json.loads((tmp_path / "compared" / "report.json").read_text())
    assert compared.markdown == (tmp_path / "compared" / "report.md").read_text().replace(
        "![curves](curves.png)", "").rstrip() + "\n"
    assert compared.figure == str(tmp_path / "compared" / "curves.png")
    for arch in ("singlestage", "multistage"):
        assert runs_of(compared.report)[arch]["epochs"] == read_history(str(tmp_path / "compared" / arch))["epochs"]
    with pytest.raises(UserError, match=r"train\(\) trains one run"):  # before anything trains
        run.train(resume=compared.directory)

    study = run.compare("singlestage", "multistage", seeds=[0, 1], train_eval=40, output_dir=str(tmp_path / "study"),
                        **dict(common, epochs=1))
    assert study.report == json.loads((tmp_path / "study" / "study.json").read_text())
    assert study.markdown == (tmp_path / "study" / "study.md").read_text().replace(
        "![curves](study.png)", "").rstrip() + "\n"
    assert study.figure == str(tmp_path / "study" / "study.png") and os.path.exists(study.figure)
