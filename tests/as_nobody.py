"""Run `run.py` as the user 'nobody' (for the permission tests, which otherwise run as root here).

    python tests/as_nobody.py RUN.PY ARGS...

Everything `run.py` imports is imported first, as root: the interpreter and its libraries may live where
'nobody' cannot read (e.g. under /root). Exits 77 where dropping to another user is not possible.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import encodings.latin_1  # noqa: E402,F401  (the CIFAR archives are read as latin-1)

import run  # noqa: E402  (and with it torch, ignite and the engine)


def main():
    if os.geteuid() == 0:
        try:
            import pwd

            nobody = pwd.getpwnam("nobody")
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
        except (ImportError, KeyError, PermissionError):
            sys.exit(77)
    sys.exit(run.main(sys.argv[1:]))


if __name__ == "__main__":
    main()
