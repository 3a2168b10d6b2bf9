"""Wall time of the tiny BiX-NAS search under nnictl: local training service vs NNI's remote service over SSH.

Each round runs ``tests/test_remote.py``'s :func:`local_and_remote`: the tiny search of
``tests/test_experiment_bixnas.py`` (plus ``inherit_weights``, one torch thread) with ``nnictl create`` to
DONE on the local training service and on the remote one, against a throwaway ``sshd`` on 127.0.0.1 (the
same machine: this measures NNI's remote machinery, SSH, upload, trial keeper, not a network). Rounds
alternate which service goes first. Writes ``benchmarks/results/remote.md``.

Usage::

    python benchmarks/remote_overhead.py [--rounds 2] [--out benchmarks/results/remote.md]

Needs ``sshd`` (``apt-get install openssh-server``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "remote.md"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="local+remote pairs (default 2)")
    parser.add_argument("--out", type=Path, default=RESULT, help=f"markdown file (default {RESULT})")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    sys.path.insert(0, str(ROOT / "tests"))
    from nni_bixnas.utils import atomic_write
    from test_remote import SSHD, local_and_remote

    if SSHD is None:
        raise SystemExit("sshd is not installed (apt-get install openssh-server)")

    load_before, started = os.getloadavg()[0], time.monotonic()
    rows = []
    for index in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bixnas-remote-") as tmp:
            runs = local_and_remote(Path(tmp), remote_first=index % 2 == 1)
        for name in ("local", "remote"):
            run = runs[name]
            if run["status"] != "DONE":
                raise SystemExit(f"round {index + 1}: the {name} run ended {run['status']}")
        same = runs["local"]["gene"] == runs["remote"]["gene"]
        rows.append((index + 1, "remote" if index % 2 else "local", runs["local"], runs["remote"], same))
        print(f"round {index + 1}: local {runs['local']['wall_s']:.1f} s, remote {runs['remote']['wall_s']:.1f} s, "
              f"same gene {same}", flush=True)

    def med(key, name):
        return statistics.median(row[2 if name == "local" else 3][key] for row in rows)

    def med_gaps(name):
        runs = [row[2 if name == "local" else 3] for row in rows]
        return statistics.median(r["wall_s"] - r["first_trial_s"] - r["trial_s"] for r in runs)

    lines = [
        "# The tiny BiX-NAS search: local vs remote training service (SSH to 127.0.0.1)",
        "",
        f"- command: `{shlex.join(['python', f'benchmarks/{Path(__file__).name}', *sys.argv[1:]])}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}; machine: {platform.platform()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
        "- search: `examples/bixnas.yml` / `examples/remote.yml` with the tiny settings of "
        "`tests/test_experiment_bixnas.py` (width 4, Phase 1 1 epoch, Phase 2 2 members x 1 epoch x 5 stages, "
        "1 retraining seed of 1 epoch on `default:n=6,size=64`, inherit_weights, 1 torch thread): 7 trials, "
        "one at a time; `nnictl create` to DONE.",
        "- remote: NNI 3.0 `platform: remote`, `reuseMode: false` (remote_v3), a throwaway `sshd` on 127.0.0.1 "
        "with key auth; the same machine and file system, so this is NNI's remote machinery (SSH session, "
        "`pip install nni --upgrade` with PIP_NO_INDEX, upload of the code folder, remote trial keeper), not a "
        "network or a second machine.",
        f"- load average before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} (other processes shared "
        f"the CPUs); total {time.monotonic() - started:.0f} s",
        "",
        "| round | first | local: to DONE s | first trial starts s | trials s | gaps s | remote: to DONE s "
        "| first trial starts s | trials s | gaps s | same gene |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for number, first, local, remote, same in rows:
        cells = [str(number), first]
        for run in (local, remote):
            gaps = run["wall_s"] - run["first_trial_s"] - run["trial_s"]
            cells += [f"{run['wall_s']:.1f}", f"{run['first_trial_s']:.1f}", f"{run['trial_s']:.1f}", f"{gaps:.1f}"]
        lines.append("| " + " | ".join(cells + ["yes" if same else "NO"]) + " |")
    lines += [
        "",
        f"Median to DONE: local {med('wall_s', 'local'):.1f} s, remote {med('wall_s', 'remote'):.1f} s "
        f"(remote - local: {med('wall_s', 'remote') - med('wall_s', 'local'):+.1f} s); first trial starts: local "
        f"{med('first_trial_s', 'local'):.1f} s, remote {med('first_trial_s', 'remote'):.1f} s; gaps: local "
        f"{med_gaps('local'):.1f} s, remote {med_gaps('remote'):.1f} s. \"first trial starts\" "
        "counts from `nnictl create` to the first trial's start (manager, dispatcher, for remote the SSH worker "
        "start); \"trials\" is the sum of the 7 trials' run times; \"gaps\" is the rest (between trials, and from "
        "the last trial to DONE).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
