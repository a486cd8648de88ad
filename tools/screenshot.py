#!/usr/bin/env python
"""Screenshot TensorBoard's scalars dashboard for a log directory with headless Chromium (Debian's package).

    python tools/screenshot.py runs/cifar10-bonus-e10 docs/tensorboard-scalars.png
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir")
    parser.add_argument("png")
    parser.add_argument("--size", default="1500,1100", help="window size W,H")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", args.logdir, "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        url = f"http://127.0.0.1:{port}/#scalars"
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                            "--no-first-run", "--disable-background-networking", "--disable-component-update",
                            "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
                            f"--window-size={args.size}", "--virtual-time-budget=15000",
                            f"--screenshot={os.path.abspath(args.png)}", url],
                           check=True, capture_output=True, timeout=120)
        print(args.png)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
