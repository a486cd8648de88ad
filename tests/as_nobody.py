"""Run `run.py` as the user 'nobody' (for the permission tests, which otherwise run as root here).

    python tests/as_nobody.py '[[RUN.PY ARGS...], [RUN.PY ARGS...], ...]'

runs each argument list in turn in this one process (one interpreter start for all of them) and prints a JSON
list of {"returncode", "stdout", "stderr"}, one per run. Everything `run.py` imports is imported first, as root:
the interpreter and its libraries may live where 'nobody' cannot read (e.g. under /root). Exits 77 where
dropping to another user is not possible.
"""
import contextlib
import io
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import encodings.latin_1  # noqa: E402,F401  (the CIFAR archives are read as latin-1)

import run  # noqa: E402  (and with it torch, ignite and the engine)
import torch._dynamo  # noqa: E402,F401  (torch's optimizers import it when first built)


def drop_to_nobody() -> None:
    if os.geteuid() != 0:
        return
    try:
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    except (ImportError, KeyError, PermissionError):
        sys.exit(77)


def main():
    runs = json.loads(sys.argv[1])
    drop_to_nobody()
    results = []
    for args in runs:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run.main(args)
        results.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
