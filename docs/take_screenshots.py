"""Screenshots of the NNI web UI for the docs: overview and trial detail of a tiny BiX-NAS experiment.

    python docs/take_screenshots.py                 # runs examples/bixnas.yml at tiny sizes, then stops it
    python docs/take_screenshots.py --port 8080     # attaches to a running experiment instead

The web UI fetches its icon font from a CDN: on a machine without internet the icons are blank squares.

Needs headless Chromium (``apt-get install -y chromium``). Writes ``docs/webui_overview.png`` and
``docs/webui_trials.png`` (palette-quantised to stay small).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nni_bixnas.experiment.launch import (  # noqa: E402
    ManagerClient,
    experiment_id_from_output,
    free_port,
    nnictl,
    nnictl_env,
    stop,
)

PAGES = {"webui_overview.png": "/oview", "webui_trials.png": "/detail"}
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1000", "--virtual-time-budget=8000", "--hide-scrollbars",
]


def screenshot(url: str, out: Path, chromium: str) -> None:
    """Render ``url`` with headless Chromium into ``out`` (PNG, quantised to < 300 KB)."""
    with tempfile.TemporaryDirectory() as profile:
        raw = Path(profile) / "shot.png"
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={raw}", url],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        image = Image.open(raw).convert("RGB").quantize(colors=128)
        image.save(out, optimize=True)
    print(f"{out} ({out.stat().st_size // 1024} KB)")


def run_example(workdir: Path, port: int):
    """Start ``examples/bixnas.yml`` at tiny sizes in ``workdir`` (temporary HOME and working directory)."""
    config = yaml.safe_load((ROOT / "examples" / "bixnas.yml").read_text())
    config["experimentWorkingDirectory"] = str(workdir / "experiments")
    args = config["tuner"]["classArgs"]
    args["model_space_kwargs"] = {"width": 4, "stem_width": 4}
    args["strategy_kwargs"].update(phase1={"epochs": 2}, phase2={"samples": 3, "epochs": 2, "keep": [2, 1]},
                                   retrain={"seeds": [0, 1, 2], "max_epochs": 2})
    args["evaluator_kwargs"].update(data="default:n=8,size=64", max_epochs=2)
    path = workdir / "bixnas.yml"
    path.write_text(yaml.safe_dump(config))
    env = nnictl_env(workdir / "home")
    (workdir / "home").mkdir(exist_ok=True)
    exp_id = experiment_id_from_output(nnictl(["create", "--config", str(path), "--port", str(port)], env))
    return exp_id, env


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="attach to the experiment served on this port")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="output folder (default docs/)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)
    if not Path(args.chromium).exists():
        parser.error(f"no Chromium at {args.chromium}; apt-get install -y chromium")
    workdir, exp_id, env = None, None, None
    port = args.port
    try:
        if port is None:
            workdir = Path(tempfile.mkdtemp(prefix="bixnas-screens-"))
            port = free_port()
            exp_id, env = run_example(workdir, port)
            print(f"experiment {exp_id} on port {port}: {ManagerClient(port).wait_status(timeout=900)}")
        for name, page in PAGES.items():
            screenshot(f"http://127.0.0.1:{port}{page}", args.out / name, args.chromium)
    finally:
        if exp_id is not None:
            stop([exp_id], env)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
