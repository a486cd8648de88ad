"""`--compare A B C`: any architectures of the registry, each judged against the first; and bonus directories
without a comparison.json, whose histories lack the newer recipe fields (tests/fixtures/bonus-without-record, tiny
synthetic CIFAR-10: both histories, the report, and the single-stage run's final checkpoint)."""
import json
import os
import shutil

import pytest

import run
from engine.compare.verdict import decide, decide_paired
from helpers import run_in_process, timeless, without_timings

def in_the_old_layout(report: dict) -> dict:
    """A bonus's report as reports were laid out before comparisons of any nets: the recipe with its seed as
    "config", each net's run under "runs", its one contrast at the top level."""
    (contrast,) = report["contrasts"].values()
    return {"config": {**report["recipe"], "seed": report["seeds"][0]},
            "runs": {arch: net["runs"][0] for arch, net in report["nets"].items()},
            **{key: value for key, value in contrast.items() if key != "decided_by"}}


def in_the_one_layout(report: dict) -> dict:
    """The inverse: a bonus report of the old layout as the one report of one seed is laid out now."""
    contrast = {key: report[key] for key in ("verdict", "rule", "explanation", "where_the_gain_comes_from") if key in report}
    recipe = {key: value for key, value in report["config"].items() if key != "seed"}
    names = list(report["runs"])
    return {"seeds": [report["config"]["seed"]], "recipe": recipe,
            "nets": {arch: {"runs": [run]} for arch, run in report["runs"].items()},
            "baseline": names[0], "contrasts": {names[1]: {**contrast, "decided_by": "window"}}}


FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "bonus-without-record")
COMMON = ["--dataset", "cifar10", "--batch-size", "32", "--no-progress", "--no-amp"]


@pytest.fixture
def old_bonus(tmp_path):
    from synthetic_cifar import write_cifar10

    write_cifar10(str(tmp_path / "data"))  # the images the fixture was trained on (a fixed seed)
    shutil.copytree(FIXTURE, tmp_path / "bonus")
    return str(tmp_path / "data"), tmp_path / "bonus"


def test_report_of_a_bonus_written_before_compare_is_rebuilt_unchanged(old_bonus):
    data_dir, bonus = old_bonus
    before = json.loads((bonus / "report.json").read_text())
    old_markdown = (bonus / "report.md").read_text()
    assert run_in_process(["--report", str(bonus), "--data-dir", data_dir]).returncode == 0
    after = in_the_old_layout(json.loads((bonus / "report.json").read_text()))  # the fixture's report is in the old one
    gain_before = before.pop("where_the_gain_comes_from")
    gain_after = after.pop("where_the_gain_comes_from")
    for arch, run_summary in after["runs"].items():  # what the fixture's report lacks: the best epoch beside the last,
        best = max(run_summary["epochs"], key=lambda e: (e["test_accuracy"], -e["epoch"]))
        assert run_summary.pop("best_epoch") == {"epoch": best["epoch"], "test_accuracy": best["test_accuracy"],
                                                 "chosen_by": "test_accuracy"}  # the fixture's runs hold nothing out
        # and the precision and machine, as far as its histories recorded them (the precision, not the machine),
        # and how many training images train-eval measured (the 60 asked for, of 100)
        assert (run_summary.pop("precision"), run_summary.pop("machine")) == ("fp32", None)
        assert run_summary.pop("train_eval_images") == 60
    # recipe fields the histories lack are absent from the records too
    assert timeless(after, also=["data_dir"]) == timeless(before, also=["data_dir"])
    # The fixture keeps the single-stage run's checkpoint only: the per-class part says what it lacked.
    assert "classes" in gain_before and "checkpoint_" in gain_after["unavailable"]

    def timeless_lines(text):
        text = text.split("## Where the gain comes from")[0]
        return [line for line in text.splitlines() if "per second" not in line and "seconds per epoch" not in line
                and not line.startswith("| test accuracy at the best epoch")]

    def tables(text):
        """The per-epoch rows by (epoch, net) and the final rows by name, each a {column: cell}, and the rest."""
        per_epoch, final, rest, table, header = {}, {}, [], None, None
        for line in timeless_lines(text):
            if line.startswith("## "):
                table = {"## Per epoch": per_epoch, "## Final numbers (last epoch)": final}.get(line)
            if table is not None and line.startswith("| ---"):
                continue  # a table's alignment row: its width follows the columns
            if table is None or not line.startswith("| "):
                rest.append(line)
            elif header is None or line.startswith("| epoch |") or line.startswith("| |"):
                header = [cell.strip() for cell in line.strip("|").split("|")]
            else:
                cells = [cell.strip() for cell in line.strip("|").split("|")]
                key = tuple(cells[:2]) if table is per_epoch else cells[0]
                table[key] = dict(zip(header, cells))
        return per_epoch, final, rest

    old_header = "blocks per stage 2, device cpu, train-eval"
    assert old_header in old_markdown
    old = tables(old_markdown.replace(old_header, "blocks per stage 2, device cpu, precision fp32, train-eval"))
    new = tables((bonus / "report.md").read_text())
    assert new[2] == old[2]  # all but the two tables, unchanged
    # The tables show every result the runs recorded (the registry's metrics on each split), named as study.md names
    # them: the old columns' cells are all there, under those names, and train-eval's top-5 is new.
    renamed = {"mean train loss": "mean train loss", "train-eval acc": "train-eval accuracy", "test acc": "test accuracy",
               "mean train loss (last epoch)": "mean train loss"}
    assert new[0].keys() == old[0].keys() and new[1].keys() >= {renamed.get(k, k) for k in old[1]}
    for row, cells in old[0].items():
        assert {renamed.get(column, column): cell for column, cell in cells.items()}.items() <= new[0][row].items()
        assert "train-eval top-5" in new[0][row]
    for name, cells in old[1].items():
        assert new[1][renamed.get(name, name)] == {**cells, "": renamed.get(name, name)}


LAYOUTS_BEFORE = os.path.join(os.path.dirname(__file__), "fixtures", "study-in-the-layouts-before-one-report")


def sections(markdown: str, *headings: str) -> dict[str, str]:
    """The text under each of `headings` (a Markdown heading line), up to the next heading of any level."""
    parts = {}
    for heading in headings:
        after = markdown.split(f"\n{heading}\n", 1)[1]
        parts[heading] = after.split("\n#", 1)[0]
    return parts


def test_report_of_a_study_written_before_one_report_layout_gives_its_numbers_again(tmp_path, capsys):
    """A study of three nets and two seeds (tiny synthetic CIFAR-10: its plans, histories and reports, no checkpoints)
    written when a comparison's report.json and a study's study.json had layouts of their own: `--report` of each
    seed's comparison and of the study writes them in the one layout, with the numbers, verdicts, rules and ablation
    the old files hold, and the same tables in the Markdown."""
    study = tmp_path / "study"
    shutil.copytree(LAYOUTS_BEFORE, study)
    no_data = ["--data-dir", str(tmp_path / "no-data")]  # nothing to re-test: the gains say so, the rest is arithmetic
    for seed in (0, 1):
        folder = study / f"seed{seed}"
        old, old_markdown = json.loads((folder / "report.json").read_text()), (folder / "report.md").read_text()
        assert run.main(["--report", str(folder), *no_data]) == 0
        new = json.loads((folder / "report.json").read_text())
        assert new["seeds"] == [old["config"]["seed"]] and new["recipe"] == {
            key: value for key, value in old["config"].items() if key != "seed"}
        assert list(new["nets"]) == list(old["runs"]) == NETS and new["baseline"] == old["baseline"]
        for net, old_run in old["runs"].items():
            (new_run,) = new["nets"][net]["runs"]
            assert new_run["run_dir"] == str(folder / net)
            assert timeless(new_run, also=["data_dir"]) == timeless(old_run, also=["data_dir"])
        for net, old_contrast in old["contrasts"].items():
            kept = ("verdict", "rule", "explanation")
            assert {key: new["contrasts"][net][key] for key in kept} == {key: old_contrast[key] for key in kept}
            assert new["contrasts"][net]["decided_by"] == "window"
        tables = ("## Per epoch", "## Final numbers (last epoch)", "## Against the baseline", "## The rule")
        assert sections((folder / "report.md").read_text(), *tables) == sections(old_markdown, *tables)
    old, old_markdown = json.loads((study / "study.json").read_text()), (study / "study.md").read_text()
    assert run.main(["--report", str(study), *no_data]) == 0
    new = json.loads((study / "study.json").read_text())
    for key in ("seeds", "recipe", "train_eval_images", "precision", "baseline", "ablation"):
        assert new[key] == old[key], key
    for net, numbers in old["nets"].items():
        assert {key: new["nets"][net][key] for key in numbers} == numbers
        assert [run["run_dir"] for run in new["nets"][net]["runs"]] == [str(study / f"seed{s}" / net) for s in (0, 1)]
    for net, old_contrast in old["contrasts"].items():
        assert {key: new["contrasts"][net][key] for key in ("verdict", "rule")} == {
            key: old_contrast[key] for key in ("verdict", "rule")}
        assert new["contrasts"][net]["decided_by"] == "paired"
    tables = ("## Last epoch", "## The rule", "## What explains the gain (ablation)")
    assert sections((study / "study.md").read_text(), *tables) == sections(old_markdown, *tables)
    # The per-epoch table now has a column for every recorded result: the old columns' cells are there, renamed.
    per_epoch = [sections(text, "## Per epoch (mean across seeds)")["## Per epoch (mean across seeds)"]
                 for text in (old_markdown, (study / "study.md").read_text())]
    old_rows, new_rows = ([dict(zip(rows[1].strip("|").split(" | "), row.strip("|").split(" | ")))
                           for row in rows[3:] if row.startswith("| ")]
                          for rows in (table.splitlines() for table in per_epoch))
    renamed = {"test acc": "test accuracy", "train-eval acc": "train-eval accuracy"}
    assert len(old_rows) == len(new_rows) == 3  # three nets, one epoch
    for old_row, new_row in zip(old_rows, new_rows):
        assert {renamed.get(column.strip(), column.strip()): cell.strip() for column, cell in old_row.items()}.items() <= {
            column.strip(): cell.strip() for column, cell in new_row.items()}.items()
    assert "Verdict across seeds (multistage against singlestage): " in capsys.readouterr().out


def test_a_report_header_names_the_optimisation_its_runs_had():
    from engine.compare.render import render

    with open(os.path.join(FIXTURE, "report.json")) as handle:
        report = in_the_one_layout(json.load(handle))
    assignment_header = render(report, "curves.png").splitlines()[2]
    assert "batch 32, Adam lr 0.001, seed 0, augmentation off" in assignment_header
    report["recipe"] |= {"optimizer": "sgd", "lr": 0.2, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
                         "schedule": "onecycle", "warmup": 1.0, "label_smoothing": 0.1, "augment": True, "ema": 0.99,
                         "crop_padding": 2, "tta": "flip"}
    header = render(report, "curves.png").splitlines()[2]
    assert "Adam" not in header
    assert ("batch 32, SGD lr 0.2, Nesterov momentum 0.9, weight decay 0.0005, onecycle schedule with 1.0 warm-up "
            "epochs, label smoothing 0.1, EMA 0.99, test-time flips, seed 0, augmentation on (crop padding 2)") in header


@pytest.mark.slow
def test_a_bonus_written_before_compare_resumes(old_bonus, tmp_path):
    """The bonus stopped after its single-stage run: `--bonus --resume` trains the multi-stage net, which ends as a
    fresh multi-stage run of the recorded recipe does, and writes the report; the finished run is not touched."""
    data_dir, bonus = old_bonus
    shutil.rmtree(bonus / "multistage")
    for name in ("report.json", "report.md"):
        os.remove(bonus / name)
    single_before = (bonus / "singlestage" / "history.json").read_bytes()
    resumed = run_in_process(["--bonus", "--resume", str(bonus), "--data-dir", data_dir])
    assert resumed.returncode == 0, resumed.stderr
    assert f"singlestage: already trained in {bonus / 'singlestage'}, not training again" in resumed.stdout
    assert (bonus / "singlestage" / "history.json").read_bytes() == single_before
    fresh = run_in_process([*COMMON, "--data-dir", data_dir, "--arch", "multistage", "--epochs", "2",
                            "--train-eval", "60", "--output-dir", str(tmp_path / "fresh")])
    assert fresh.returncode == 0, fresh.stderr
    read = lambda d: json.loads((d / "history.json").read_text())  # noqa: E731
    assert without_timings(read(bonus / "multistage")) == without_timings(read(tmp_path / "fresh"))
    report = json.loads((bonus / "report.json").read_text())
    assert list(report["nets"]) == ["singlestage", "multistage"] and "verdict" in report["contrasts"]["multistage"]
    record = json.loads((bonus / "comparison.json").read_text())  # the record a resume writes where it was missing
    assert record["nets"] == ["singlestage", "multistage"] and record["recipe"]["train_eval"] == 60


NETS = ["singlestage", "multistage", "multistage-narrow"]  # the narrow variant: the cheapest to train


def histories(directory):
    return {net: json.loads((directory / net / "history.json").read_text()) for net in NETS}


@pytest.mark.slow
def test_three_networks_each_judged_against_the_first_in_a_study_that_resumes(cifar10_dir, tmp_path, monkeypatch):
    """`--compare` with three nets and two seeds, stopped by Ctrl-C in seed 1's second run and continued with the
    printed command: each seed's report and the summary judge every net against the first, with verdicts equal to
    those computed here from the histories."""
    import engine.build
    from fault_injection import with_fault

    data_dir, _ = cifar10_dir
    study = tmp_path / "study"
    args = [*COMMON, "--batch-size", "50", "--data-dir", data_dir, "--epochs", "1", "--train-eval", "40",
            "--compare", *NETS, "--seeds", "0", "1", "--output-dir", str(study)]
    build_run = engine.build.build_run
    calls = []

    def stop_the_fifth_run(recipe, setup, data):  # seed 1's multi-stage run: Ctrl-C after its first iteration
        calls.append(recipe.arch)
        built = build_run(recipe, setup, data)
        return with_fault(lambda *_: built, "sigint", 1)(recipe, setup, data) if len(calls) == 5 else built

    monkeypatch.setattr(engine.build, "build_run", stop_the_fifth_run)
    stopped = run_in_process(args)
    assert stopped.returncode == 130
    command = f"python run.py --seeds 0 1 --compare {' '.join(NETS)} --resume {study}"
    assert stopped.stderr.strip().endswith(f"Continue with: {command}")
    monkeypatch.setattr(engine.build, "build_run", build_run)
    resumed = run_in_process(command.split()[2:])
    assert resumed.returncode == 0, resumed.stderr

    # Seed 0's comparison, finished before the interruption.
    seed0 = study / "seed0"
    record = json.loads((seed0 / "comparison.json").read_text())
    assert (record["nets"], record["recipe"]["seed"], record["data_dir"]) == (NETS, 0, data_dir)
    report = json.loads((seed0 / "report.json").read_text())
    assert list(report["nets"]) == NETS and report["baseline"] == "singlestage" and report["seeds"] == [0]
    runs = histories(seed0)
    for net in NETS[1:]:
        expected = decide(runs["singlestage"]["epochs"], runs[net]["epochs"], names=("singlestage", net))
        assert report["contrasts"][net]["verdict"] == json.loads(json.dumps(expected))
        assert f"Verdict ({net} against singlestage): {expected['verdict']}" in stopped.stdout
        assert set(report["contrasts"][net]["where_the_gain_comes_from"]["classes"]["classes"][0]) == {
            "class", "singlestage", net, "gain", "seeds_improved"}
    markdown = (seed0 / "report.md").read_text()
    assert markdown.startswith("# Single-stage vs multi-stage vs narrow multi-stage ResNet on cifar10")
    assert all(f"\n| {net} | " in markdown for net in NETS)  # one row per network in "Against the baseline"
    assert "- **multistage-narrow**: the multi-stage net at half width" in markdown
    assert "## multistage-narrow against singlestage:" in markdown and os.path.getsize(seed0 / "curves.png") > 0
    model = {net: report["nets"][net]["runs"][0]["model"] for net in NETS}
    assert model["multistage-narrow"]["parameters"] < model["multistage"]["parameters"]

    # The summary across seeds.
    summary = json.loads((study / "study.json").read_text())
    assert summary["baseline"] == "singlestage" and list(summary["contrasts"]) == NETS[1:]
    seeds = [histories(study / f"seed{seed}") for seed in (0, 1)]
    for net in NETS[1:]:
        expected = decide_paired([s["singlestage"]["epochs"] for s in seeds], [s[net]["epochs"] for s in seeds],
                                 names=("singlestage", net))
        assert summary["contrasts"][net]["verdict"] == json.loads(json.dumps(expected))
    assert "## multistage-narrow against singlestage:" in (study / "study.md").read_text()
    assert_ablation_from_histories(summary["ablation"], seeds)
    # Rebuilt from the histories alone: no dataset, whatever a data/ folder in the working directory holds.
    assert run_in_process(["--report", str(study), "--data-dir", str(tmp_path / "no-data")]).returncode == 0


def assert_ablation_from_histories(ablation, seeds):
    """The study's ablation (NETS: baseline, target, one variant) against numbers computed here: one epoch, so each
    seed's window mean is its last record."""
    from scipy import stats

    def last(seed, net, key):
        return seed[net]["epochs"][-1][key]

    gain = [last(s, "multistage", "train_eval_accuracy") - last(s, "singlestage", "train_eval_accuracy") for s in seeds]
    assert ablation["gain"]["values"] == pytest.approx(gain)
    assert [(row["variant"], row["reference"]) for row in ablation["contrasts"]] == [
        ("multistage-narrow", "singlestage"), ("multistage-narrow", "multistage")]
    for row in ablation["contrasts"]:
        diffs = [last(s, "multistage-narrow", "train_eval_accuracy") - last(s, row["reference"], "train_eval_accuracy")
                 for s in seeds]
        mean, sem = sum(diffs) / 2, abs(diffs[0] - diffs[1]) / 2  # two seeds: sd / sqrt(2) = |d0 - d1| / 2
        low, high = stats.t.interval(0.95, 1, loc=mean, scale=sem) if sem else (mean, mean)
        measured = row["train_eval_accuracy"]
        assert (measured["mean"], measured["ci_low"], measured["ci_high"]) == pytest.approx((mean, low, high))
        wins = sum(last(s, "multistage-narrow", "test_accuracy") > last(s, row["reference"], "test_accuracy") for s in seeds)
        assert (row["p_better"]["wins"], row["p_better"]["seeds"]) == (wins, 2)
    assert ablation["contrasts"][1]["differs_in"] == ["widths", "parameters", "MACs"]  # the layout is held equal


@pytest.mark.slow
def test_a_cifar100_ablation_study_adopts_finished_runs_by_their_history_alone(cifar100_dir, tmp_path):
    """Three nets, two seeds on the CIFAR-100 layout. A second study that holds only the first study's baseline and
    target histories (no checkpoints: runs copied in from elsewhere) trains only the variant and reaches the same
    ablation."""
    data_dir, _ = cifar100_dir
    args = [*COMMON, "--dataset", "cifar100", "--batch-size", "50", "--data-dir", data_dir, "--epochs", "1",
            "--train-eval", "40", "--compare", *NETS, "--seeds", "0", "1"]
    first = run_in_process([*args, "--output-dir", str(tmp_path / "first")])
    assert first.returncode == 0, first.stderr
    assert "Ablation: multistage-narrow - multistage: differs in widths, parameters, MACs; train-eval " in first.stdout
    adopted = tmp_path / "adopted"
    for seed in ("seed0", "seed1"):
        (adopted / seed).mkdir(parents=True)
        shutil.copy(tmp_path / "first" / seed / "comparison.json", adopted / seed)
        for net in NETS[:2]:
            (adopted / seed / net).mkdir()
            shutil.copy(tmp_path / "first" / seed / net / "history.json", adopted / seed / net)
    second = run_in_process(["--seeds", "0", "1", "--compare", *NETS, "--resume", str(adopted), "--no-progress"])
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("already trained in") == 4 and second.stdout.count("== multistage-narrow ==") == 2
    before, after = (json.loads((tmp_path / name / "study.json").read_text())["ablation"] for name in ("first", "adopted"))
    assert after == before and before["properties"]["multistage"]["parameters"] == 181_572


def test_a_comparison_resumes_only_with_its_own_nets_and_reports_only_on_comparisons(old_bonus, tmp_path):
    data_dir, bonus = old_bonus
    other = run_in_process(["--compare", "singlestage", "multistage-narrow", "--resume", str(bonus), "--data-dir", data_dir])
    assert (other.returncode, other.stderr) == (1, f"error: cannot resume {bonus}: it is a comparison (--bonus); "
                                                   f"continue it with: python run.py --bonus --resume {bonus}\n")
    (tmp_path / "plain").mkdir()
    refused = run_in_process(["--report", str(tmp_path / "plain")])
    assert (refused.returncode, refused.stderr) == (1, f"error: {tmp_path / 'plain'} is not a comparison: it has no "
                                                       "comparison.json and no singlestage/, multistage/\n")
    assert os.listdir(tmp_path / "plain") == []  # nothing written, not even a lock file
    one_run = run_in_process(["--report", str(bonus / "multistage")])
    assert (one_run.returncode, one_run.stderr) == (1, f"error: {bonus / 'multistage'} is a single run; --report "
                                                       "compares runs: name two or more (--report RUN_A RUN_B ...), "
                                                       "or a bonus, comparison or study directory\n")


def test_compare_needs_two_different_architectures(capsys):
    for flags in (["--compare", "multistage"], ["--compare", "multistage", "multistage"],
                  ["--bonus", "--compare", "singlestage", "multistage"]):
        with pytest.raises(SystemExit) as exit_info:
            run.main(flags)
        assert exit_info.value.code == 2
    assert "argument --compare" in capsys.readouterr().err
