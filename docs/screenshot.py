"""Screenshots of a real run in the Prefect UI, for the README.

It takes the flow run's page (task graph, artifact badges, log) and its Markdown report with the
plots, in headless Chromium (Debian's `chromium` package).

Starts a Prefect server of its own (its own PREFECT_HOME in a temporary folder), runs the
pipeline against it with `splitrec run`, finds the run and its report artifact through the API,
and has Chromium load each page and save a PNG.

    python docs/screenshot.py [--config data/census.toml] [--workdir runs/census]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def wait_for(url: str, timeout: float = 120) -> None:
    """Wait until `url` answers 200; raise TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=1).status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def screenshot(browser: str, url: str, out: Path, size: str) -> None:
    """Load `url` in headless Chromium, give the page's scripts time to render, save a PNG."""
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={size}", "--virtual-time-budget=20000",
                    f"--screenshot={out}", url], check=True, capture_output=True, timeout=180)
    print(f"{out}: {url}")


def main() -> None:
    """Start a Prefect server, run the pipeline against it and save the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "data" / "census.toml")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "census")
    parser.add_argument("--port", type=int, default=4299)
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("needs Chromium: apt-get install chromium")

    api = f"http://127.0.0.1:{args.port}/api"
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env |= {"PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_API_URL": api}  # the UI's own default is port 4200
        server = subprocess.Popen([str(bin_dir / "prefect"), "server", "start", "--host",
                                   "127.0.0.1", "--port", str(args.port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(f"{api}/health")
            env["PREFECT_API_URL"] = api
            subprocess.run([str(bin_dir / "splitrec"), "run", str(args.config), "--workdir",
                            str(args.workdir)], cwd=REPO, env=env, check=True)
            os.environ["PREFECT_API_URL"] = api
            from prefect.client.orchestration import get_client
            from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
            from prefect.client.schemas.sorting import FlowRunSort

            with get_client(sync_client=True) as client:
                [run] = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
                artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
            report = next(a for a in artifacts if a.key and a.key.endswith("-report"))
            ui = f"http://127.0.0.1:{args.port}"
            args.out.mkdir(parents=True, exist_ok=True)
            screenshot(browser, f"{ui}/runs/flow-run/{run.id}",
                       args.out / "flow-run.png", "1400,1000")
            screenshot(browser, f"{ui}/artifacts/artifact/{report.id}",
                       args.out / "run-report.png", "1400,2200")
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
