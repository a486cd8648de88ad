"""Everything a user sees of a fixed set of commands on tiny data, written to a folder; and the differences between two
such folders. A change meant to keep behaviour (a refactor) leaves the snapshot as it was:

    python tests/snapshot.py write BEFORE --at HEAD   # these commands on the code of a commit (a git worktree)
    python tests/snapshot.py write AFTER              # on the working tree
    python tests/snapshot.py compare BEFORE AFTER

The commands: a run, a bonus, a 3-net 2-seed study, a 1-net 3-seed study, one-seed studies of 2 nets and of 1, `--evaluate` and `--report` of each, a
`--recipe fast` run, a run interrupted by Ctrl-C and resumed, and the refusals that tiny data can provoke. What is
kept: each command's exit code, console output and errors; every JSON file (as data) and Markdown file written.
Timings and the folder the snapshot was written in are masked; trained numbers are compared exactly, so both
snapshots must come from one machine with one thread count.
"""
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

TIMING = re.compile(r"\d+(\.\d+)?s\b|\d+ img/s|\(started [^)]*\)|\d{8}-\d{6}")
TIMING_ROW = re.compile(r"^\| (seconds|images per second)\b.*$", re.MULTILINE)
EVENT_FILE = re.compile(r"events\.out\.tfevents\..*")
TIMING_KEYS = ("seconds", "images_per_s", "started")


def commands(root: str) -> list[tuple[str, list[str], str | None]]:
    """(name, run.py arguments, fault) in the order they run; a fault 'sigint:N' stops the run after iteration N."""
    data = ["--dataset", "cifar10", "--data-dir", f"{root}/data", "--batch-size", "32", "--no-progress", "--no-amp"]
    tiny = [*data, "--epochs", "2"]
    out = lambda name: ["--output-dir", f"{root}/{name}"]  # noqa: E731
    return [
        ("run", [*tiny, "--arch", "multistage-narrow", *out("run")], None),
        ("bonus", [*tiny, "--bonus", "--train-eval", "40", *out("bonus")], None),
        ("study-3x2", [*data, "--epochs", "1", "--train-eval", "40", "--compare", "singlestage", "multistage",
                       "multistage-narrow", "--seeds", "0", "1", *out("study-3x2")], None),
        ("study-1x3", [*tiny, "--arch", "multistage-narrow", "--seeds", "0", "1", "2", *out("study-1x3")], None),
        ("study-2x1", [*tiny, "--bonus", "--train-eval", "40", "--seeds", "0", *out("study-2x1")], None),
        ("study-1x1", [*tiny, "--arch", "multistage-narrow", "--seeds", "1", *out("study-1x1")], None),
        ("fast", [*tiny, "--recipe", "fast", "--arch", "multistage-narrow", *out("fast")], None),
        ("interrupted", [*tiny, "--arch", "multistage-narrow", *out("interrupted")], "sigint:6"),
        ("resumed", ["--resume", f"{root}/interrupted"], None),
        ("evaluate-run", ["--evaluate", f"{root}/run", "--no-progress"], None),
        ("evaluate-bonus", ["--evaluate", f"{root}/bonus", "--no-progress"], None),
        ("evaluate-study", ["--evaluate", f"{root}/study-1x3", "--no-progress"], None),
        ("report-bonus", ["--report", f"{root}/bonus"], None),
        ("report-study-3x2", ["--report", f"{root}/study-3x2"], None),
        ("report-study-1x3", ["--report", f"{root}/study-1x3"], None),
        ("report-two-runs", ["--report", f"{root}/bonus/singlestage", f"{root}/bonus/multistage"], None),
        ("resume-finished", ["--resume", f"{root}/study-1x3"], None),
        # Refusals.
        ("existing-output-dir", [*tiny, *out("run")], None),
        ("batch-too-large", [*data, "--batch-size", "256", *out("refused")], None),
        ("no-download", ["--dataset", "cifar10", "--data-dir", f"{root}/nothing", "--no-download", *out("refused")], None),
        ("nesterov-adam", [*tiny, "--nesterov", *out("refused")], None),
        ("crop-without-augment", [*tiny, "--crop-padding", "2", *out("refused")], None),
        ("warmup-whole-run", [*tiny, "--recipe", "fast", "--warmup", "2", *out("refused")], None),
        ("resume-changed-lr", ["--resume", f"{root}/run", "--lr", "0.01"], None),
        ("resume-changed-amp", ["--resume", f"{root}/run", "--amp", "bf16"], None),
        ("resume-bonus-as-study", ["--seeds", "0", "1", "--bonus", "--resume", f"{root}/bonus"], None),
        ("resume-study-other-seeds", ["--seeds", "0", "1", "--arch", "multistage-narrow", "--resume", f"{root}/study-1x3"], None),
        ("resume-bonus-other-nets", ["--compare", "singlestage", "multistage-narrow", "--resume", f"{root}/bonus"], None),
        ("resume-run-as-bonus", ["--bonus", "--resume", f"{root}/run"], None),
        ("resume-without-checkpoint", ["--resume", f"{root}/data"], None),
        ("report-plain-folder", ["--report", f"{root}/data"], None),
        ("report-different-recipes", ["--report", f"{root}/fast", f"{root}/bonus/singlestage"], None),
        ("evaluate-nothing", ["--evaluate", f"{root}/data"], None),
        ("bad-epochs", [*tiny, "--epochs", "0"], None),
        ("unknown-arch", [*tiny, "--arch", "resnet9000"], None),
    ]


def run_command(args: list[str], fault: str | None) -> tuple[int, str, str]:
    import engine.build
    import run
    from fault_injection import with_fault

    build_run = engine.build.build_run
    if fault:
        point, n = fault.split(":")
        engine.build.build_run = with_fault(build_run, point, int(n))
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = run.main(args)
            except SystemExit as stop:  # argparse
                code = stop.code
    finally:
        engine.build.build_run = build_run
    return code, out.getvalue(), err.getvalue()


def masked_text(text: str, root: str) -> str:
    return TIMING.sub("<t>", TIMING_ROW.sub("<timing row>", text.replace(root, "<root>")))


def masked_data(value, root: str):
    if isinstance(value, dict):
        return {key: ("<t>" if any(word in key for word in TIMING_KEYS) else masked_data(item, root))
                for key, item in value.items()}
    if isinstance(value, list):
        return [masked_data(item, root) for item in value]
    return value.replace(root, "<root>") if isinstance(value, str) else value


def write(folder: str) -> None:
    """Run every command in `folder`/work and write what it showed and wrote to `folder`/snapshot.json."""
    from synthetic_cifar import write_cifar10

    folder = os.path.abspath(folder)
    root = os.path.join(folder, "work")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    write_cifar10(os.path.join(root, "data"))
    os.chdir(root)  # where a command without --output-dir writes its runs/
    snapshot = {"commands": {}, "files": {}}
    for name, args, fault in commands(root):
        code, out, err = run_command(args, fault)
        snapshot["commands"][name] = {"exit": code, "stdout": masked_text(out, root), "stderr": masked_text(err, root)}
        print(f"{name}: exit {code}", flush=True)
    for directory, _, files in sorted(os.walk(root)):
        for file in sorted(files):
            path = os.path.join(directory, file)
            key = masked_text(os.path.relpath(path, root), root)
            if file.endswith(".json"):
                with open(path) as f:
                    snapshot["files"][key] = masked_data(json.load(f), root)
            elif file.endswith(".md"):
                with open(path) as f:
                    snapshot["files"][key] = masked_text(f.read(), root)
            elif EVENT_FILE.fullmatch(file):  # named by time and process: counted per folder
                events = os.path.join(os.path.dirname(key), "events.out.tfevents.*")
                snapshot["files"][events] = snapshot["files"].get(events, 0) + 1
            elif not key.startswith("data"):
                snapshot["files"][key] = "present"
    with open(os.path.join(folder, "snapshot.json"), "w") as f:
        json.dump(snapshot, f, indent=1, sort_keys=True)


def differences(before, after, where="") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        found = [f"{where}/{key}: only before" for key in before.keys() - after.keys()]
        found += [f"{where}/{key}: only after" for key in after.keys() - before.keys()]
        for key in sorted(before.keys() & after.keys()):
            found += differences(before[key], after[key], f"{where}/{key}")
        return found
    if before != after:
        if isinstance(before, str) and isinstance(after, str):
            lines = [f"  - {a}\n  + {b}" for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
            return [f"{where}:\n" + "\n".join(lines or [f"  {len(before)} vs {len(after)} characters"])]
        return [f"{where}: {json.dumps(before)[:300]} != {json.dumps(after)[:300]}"]
    return []


def write_at(folder: str, revision: str) -> None:
    """`write` with this file's commands, run on the code of `revision` checked out in a temporary git worktree."""
    repo = os.path.dirname(HERE)
    with tempfile.TemporaryDirectory() as tree:
        subprocess.run(["git", "-C", repo, "worktree", "add", "--quiet", "--detach", tree, revision], check=True)
        try:
            shutil.copy(os.path.abspath(__file__), os.path.join(tree, "tests", "snapshot.py"))
            subprocess.run([sys.executable, os.path.join(tree, "tests", "snapshot.py"), "write", os.path.abspath(folder)],
                           check=True)
        finally:
            subprocess.run(["git", "-C", repo, "worktree", "remove", "--force", tree], check=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["write"] and len(argv) == 2:
        write(argv[1])
        return 0
    if argv[:1] == ["write"] and len(argv) == 4 and argv[2] == "--at":
        write_at(argv[1], argv[3])
        return 0
    if argv[:1] == ["compare"] and len(argv) == 3:
        before, after = (json.load(open(os.path.join(folder, "snapshot.json"))) for folder in argv[1:])
        found = differences(before, after)
        print("\n".join(found) if found else "no differences")
        return 1 if found else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
