"""Data files cannot run code, and a malformed one is one line naming it: planted payloads, and a property-based
test that mutates the official-layout dicts of both datasets and runs `run.py` on them."""
import contextlib
import io
import os
import pickle
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import run
from synthetic_cifar import write_cifar10, write_cifar100

CANARY = os.path.join(tempfile.gettempdir(), "cifar-resnets-canary-{pid}")


class Payload:
    """Unpickling this calls `open(path, "w")`: a stand-in for any code a planted file could run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def canary_path():
    return CANARY.format(pid=os.getpid())


def run_on(data_dir, dataset, output_dir):
    """run.py on `data_dir` in this process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = run.main(["--dataset", dataset, "--data-dir", data_dir, "--no-download", "--epochs", "1",
                         "--batch-size", "10", "--no-progress", "--no-amp", "--output-dir", output_dir])
    return code, err.getvalue()


def assert_one_line_naming(err, path):
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: "), err
    assert "Traceback" not in err


@pytest.mark.parametrize("dataset, file, key", [
    ("cifar10", "batches.meta", "label_names"),
    ("cifar10", "data_batch_2", "labels"),
    ("cifar100", "meta", b"fine_label_names"),
    ("cifar100", "test", b"data"),
])
def test_a_planted_payload_is_refused_and_never_runs(tmp_path, dataset, file, key):
    written = (write_cifar10 if dataset == "cifar10" else write_cifar100)(str(tmp_path / "data"))
    path = os.path.join(written["folder"], file)
    with open(path, "rb") as f:
        record = pickle.load(f, encoding="bytes" if dataset == "cifar100" else "latin1")
    canary = tmp_path / "owned"
    record[key] = Payload(str(canary))
    with open(path, "wb") as f:
        pickle.dump(record, f, protocol=2)
    code, err = run_on(str(tmp_path / "data"), dataset, str(tmp_path / "run"))
    assert code == 1
    assert_one_line_naming(err, path)
    assert "refused to load: it asks for io.open" in err or "refused to load: it asks for builtins.open" in err
    assert not canary.exists()
    assert not (tmp_path / "run").exists()


def test_class_names_that_are_not_text_are_one_line(tmp_path):
    written = write_cifar10(str(tmp_path / "data"))
    path = os.path.join(written["folder"], "batches.meta")
    with open(path, "wb") as f:
        pickle.dump({"label_names": list(range(10)), "num_cases_per_batch": 20, "num_vis": 3072}, f)
    code, err = run_on(str(tmp_path / "data"), "cifar10", str(tmp_path / "run"))
    assert code == 1
    assert err == f"error: {path}: 'label_names' must be a list of non-empty names, found other entries in the list\n"


# --- property-based: mutate any field of any file of either dataset --------------------------------------------------

def value_mutations(value):
    """Strategies for a wrong value in place of `value`: another type, shape, dtype, length or range."""
    others = st.sampled_from([None, 3, -1, 2.5, "text", b"bytes", [], {}, ["a", 1], [[1, 2], [3]], True,
                              np.zeros(3, np.float32), np.zeros((2, 2), np.int64), 10**30])
    if isinstance(value, np.ndarray):
        reshaped = st.sampled_from([value[:, : value.shape[1] // 2], value.reshape(-1), value.astype(np.int16),
                                    value.astype(np.float32), value[:0], value[None]])
        return st.one_of(others, reshaped)
    if isinstance(value, list) and value and isinstance(value[0], int):
        return st.one_of(others, st.sampled_from([value[:-1], value + [0], [v + 1000 for v in value],
                                                  [-1] + value[1:], [float(v) for v in value], [str(v) for v in value]]))
    if isinstance(value, list):
        return st.one_of(others, st.sampled_from([value[:-1], value + value[:1], [1] * len(value), [""] * len(value)]))
    return others


FILES = {"cifar10": ["batches.meta", "data_batch_1", "data_batch_5", "test_batch"], "cifar100": ["meta", "train", "test"]}
WRITERS = {"cifar10": lambda d: write_cifar10(d, per_batch=4, n_test=4), "cifar100": lambda d: write_cifar100(d, 20, 8)}


@st.composite
def corruption(draw):
    dataset = draw(st.sampled_from(sorted(FILES)))
    file = draw(st.sampled_from(FILES[dataset]))
    how = draw(st.sampled_from(["drop key", "change value", "payload", "truncate", "not a dict"]))
    return dataset, file, how, draw(st.integers(0, 10**6))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=corruption(), data=st.data())
def test_any_corrupted_field_or_file_is_one_line_naming_the_file(case, data):
    dataset, file, how, number = case
    with tempfile.TemporaryDirectory() as root:
        written = WRITERS[dataset](os.path.join(root, "data"))
        path = os.path.join(written["folder"], file)
        with open(path, "rb") as f:
            record = pickle.load(f, encoding="bytes" if dataset == "cifar100" else "latin1")
        keys = sorted(record, key=repr)
        key = keys[number % len(keys)]
        canary = canary_path()
        if os.path.exists(canary):  # left by an earlier, failing example: start clean
            os.remove(canary)
        if how == "drop key":
            if key in (b"filenames", "filenames", b"batch_label", "batch_label", "num_cases_per_batch", "num_vis"):
                key = next(k for k in keys if k in (b"data", "data", b"fine_label_names", "label_names", "labels"))
            del record[key]
        elif how == "change value":
            record[key] = data.draw(value_mutations(record[key]))
        elif how == "payload":
            record[key] = Payload(canary)
        if how == "not a dict":
            record = list(record.values())
        blob = pickle.dumps(record, protocol=2)
        if how == "truncate":
            blob = blob[: number % len(blob)]
        with open(path, "wb") as f:
            f.write(blob)
        code, err = run_on(os.path.join(root, "data"), dataset, os.path.join(root, "run"))
        assert not os.path.exists(canary)
        if code == 0:
            # Only a mutation that leaves a valid file may pass (e.g. a class name list with other valid names).
            assert how == "change value", (how, key)
            return
        assert code == 1
        assert_one_line_naming(err, path)
