"""A screenshot of the rerun web viewer on a recording, taken by headless Chromium (how docs/images/viewer.png was
made). Needs what the tests do not: Chromium (``apt-get install chromium``) and the ``playwright`` package (it
drives the system Chromium; no browser download).

    spade4d view --root outputs/demo/synthetic/psg4d_pc --pred outputs/demo/predictions_test.json \
        --out demo.rrd --no-open --top-k 5
    python scripts/viewer_screenshot.py demo.rrd docs/images/viewer.png
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

URL = "http://127.0.0.1:{web}?url=rerun%2Bhttp%3A%2F%2Flocalhost%3A{grpc}%2Fproxy"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recording")
    p.add_argument("out")
    p.add_argument("--wait", type=float, default=40.0, help="seconds for the viewer to load and draw (CPU: slow)")
    p.add_argument("--size", default="1600x900")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    rerun = Path(sys.executable).with_name("rerun")
    server = subprocess.Popen([str(rerun), "--serve-web", args.recording], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    width, height = (int(v) for v in args.size.split("x"))
    try:
        time.sleep(5)
        with sync_playwright() as pw:
            flags = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]
            browser = pw.chromium.launch(executable_path=args.chromium, args=flags)
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(URL.format(web=9090, grpc=9876))
            time.sleep(args.wait)
            page.screenshot(path=args.out)
            browser.close()
    finally:
        server.terminate()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
