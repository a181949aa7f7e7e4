"""`make demo-distributed`: the census pipeline as three separate organisations on this machine.

Splits the one-process config into a trial federation (`splitrec party trial`): one folder per
party with only its own data file, its private party.toml, its copy of federation.toml and its
certificate, key and token from a fresh CA. Then starts `splitrec party run` once per party, each
an OS process of its own in its own folder, with its own Prefect home and temporary Prefect API,
listening on its own port on 127.0.0.1; they find each other over Arrow Flight with mutual TLS.
Prints the label party's report, as `make demo` does; a party that fails is named with the end
of its log.

    python deployments/distributed.py --config data/census.toml --data-workdir runs/census
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    """Make the trial federation, run its parties apart; exit status 1 if any party failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("data/census.toml"))
    parser.add_argument("--data-workdir", type=Path, default=Path("runs/census"),
                        help="where `splitrec data census` put the parties' files")
    parser.add_argument("--out", type=Path, default=Path("runs/distributed"))
    parser.add_argument("--base-port", type=int, default=20051)
    args = parser.parse_args()
    splitrec = Path(sys.executable).with_name("splitrec")

    subprocess.run([splitrec, "party", "trial", args.config, "--data-workdir", args.data_workdir,
                    "--out", args.out, "--base-port", str(args.base_port)], check=True)
    folders = sorted(p for p in args.out.iterdir() if (p / "party.toml").exists())
    started = time.monotonic()
    parties = start_parties(folders, time.strftime("demo-%Y%m%d-%H%M%S"))
    for name, (process, folder) in parties.items():
        print(f"{name}: started (pid {process.pid}), log {folder / 'party.log'}")
    failed = []
    for name, (process, folder) in parties.items():
        output, _ = process.communicate()
        if process.returncode != 0:
            failed.append(name)
            print_failure(name, process, folder)
        elif "report:" in output:
            print(f"\n{name} (label party) after {time.monotonic() - started:.0f} s:\n{output}")
    return 1 if failed else 0


def start_parties(folders: list[Path],
                  run_id: str) -> dict[str, tuple[subprocess.Popen[str], Path]]:
    """Start `splitrec party run` for run `run_id` in every party folder of a trial federation.

    Each party has its own Prefect home; stdout is piped, the log goes to `party.log`.
    """
    splitrec = Path(sys.executable).with_name("splitrec")
    parties = {}
    for folder in folders:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env["PREFECT_HOME"] = str((folder / ".prefect-home").resolve())  # its own Prefect
        log = (folder / "party.log").open("w")
        parties[folder.name] = (subprocess.Popen(
            [splitrec, "party", "run", "federation.toml", "--party", folder.name,
             "--run-id", run_id, "--workdir", "run"],
            cwd=folder, env=env, stdout=subprocess.PIPE, stderr=log, text=True), folder)
    return parties


def print_failure(name: str, process: subprocess.Popen[str], folder: Path) -> None:
    """Name a party that failed, with the end of its log."""
    tail = (folder / "party.log").read_text().splitlines()[-15:]
    print(f"\n{name} failed (exit status {process.returncode}); end of its log:",
          *tail, sep="\n  ", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
