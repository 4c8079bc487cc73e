"""Open a run's TensorBoard in headless Chromium and save a screenshot of its images tab.

    python scripts/tensorboard_screenshot.py --logdir runs/ucr_crop_transformer/lightning_logs \
        --output docs/tensorboard_confusion_matrix.png

Needs Debian's chromium (`apt-get install chromium`). Starts `tensorboard` on a free localhost
port, waits for it, screenshots the images tab filtered on ``--tag_filter``, stops TensorBoard.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def screenshot(logdir: Path, output: Path, tag_filter: str, size: str = "1600,1300") -> Path:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise FileNotFoundError("chromium not found: apt-get install chromium")
    if not logdir.is_dir():
        raise FileNotFoundError(f"{logdir}: no such log folder")
    port = free_port()
    tensorboard = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/data/environment", timeout_s=60)
        output.parent.mkdir(parents=True, exist_ok=True)
        temporary = output.with_name(output.stem + ".tmp.png")
        page = f"{base}/?darkMode=false#images&tagFilter={tag_filter}"
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(
                [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                 "--virtual-time-budget=20000", f"--screenshot={temporary}", page],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
        os.replace(temporary, output)
        return output
    finally:
        tensorboard.terminate()
        tensorboard.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logdir", type=Path, required=True)
    parser.add_argument("--output", type=Path, default=Path("docs/tensorboard_confusion_matrix.png"))
    parser.add_argument("--tag_filter", default="confusion_matrix")
    args = parser.parse_args()
    print(screenshot(args.logdir, args.output, args.tag_filter))


if __name__ == "__main__":
    main()
