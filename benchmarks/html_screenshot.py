"""The HTML report in a real browser: audit a leaky model with ``--html``, open the file in
headless Chromium (no server: a ``file://`` URL), and save a screenshot to look at.

    python benchmarks/html_screenshot.py [--out DIR] [--target T ...audit flags...]

Needs Chromium (Debian: ``apt-get install -y chromium``). The browser runs with no network
features (``--disable-background-networking`` and friends), so a report that needed an
external asset would show it missing. Prints the paths of the report and of the screenshot.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT = ["tests/targets/leaky.py:same_padding", "--layout", "BCT->BCT", "--length", "20"]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("no Chromium found: apt-get install -y chromium")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="screenshots", help="where to write the files")
    parser.add_argument("--size", default="1200,2400", help="window WIDTH,HEIGHT")
    args, audit = parser.parse_known_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = out / "report.html"
    cmd = [sys.executable, "-m", "properties", "audit", *(audit or DEFAULT), "--quiet",
           "--html", str(report)]
    code = subprocess.run(cmd).returncode
    print(f"audit exit code {code}; report {report}")
    if not report.exists():
        return 2
    shot = out / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={args.size}",
             f"--screenshot={shot.resolve()}", report.resolve().as_uri()],
            check=True, capture_output=True, timeout=120,
        )
    print(f"screenshot {shot} ({shot.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
