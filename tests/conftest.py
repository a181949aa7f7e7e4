"""Shared fixtures: an isolated Prefect API and result store per session, synthetic parties."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before Prefect is imported: results and the test database go to a fresh folder per session.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="splitrec-tests-"))
os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(_SESSION_DIR / "results")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

import pytest  # noqa: E402

from splitrec_core.config import Config, load_config  # noqa: E402
from splitrec_core.datasets.synthetic import write_parties  # noqa: E402
from splitrec_core.features import PartyFeatures  # noqa: E402
from splitrec_core.privacy.entropy import PIN_VARIABLE  # noqa: E402

# Every test draws the same PSI orders and privacy noise on every run (and so do the processes it
# starts), so each trained figure reproduces exactly: see splitrec_core/entropy.py.
os.environ[PIN_VARIABLE] = "splitrec-tests"

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC_TOML = REPO / "data" / "synthetic.toml"


@pytest.fixture(scope="session")
def prefect_api():
    """One throwaway Prefect API for the whole session (starting one costs ~15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def synthetic_cfg() -> Config:
    """The synthetic three-party config from `data/synthetic.toml`."""
    return load_config(SYNTHETIC_TOML)


def with_training(cfg: Config, **changes: object) -> Config:
    """`cfg` with `changes` to its training settings."""
    return cfg.model_copy(update={"training": cfg.training.model_copy(update=changes)})


@pytest.fixture
def synthetic_run(tmp_path: Path) -> Path:
    """A workdir whose `data/` holds three synthetic party CSVs (3,000 people)."""
    write_parties(tmp_path / "data", 3000, seed=0)
    return tmp_path


def prepare_features(cfg: Config, run: Path, hub=None) -> dict[str, PartyFeatures]:
    """Validate, align and engineer every party's features with the core library (no Prefect)."""
    from splitrec_core.features import build_features
    from splitrec_core.psi import PsiFiles, align_local
    from splitrec_core.validate import validate_party
    from splitrec_core.workspace import Workspace

    space = Workspace(run)
    validated = {
        p.name: validate_party(p, cfg.party_file(p, run), space.validated(p.name),
                               cfg.tasks if p.name == cfg.label_party else None,
                               engine=p.engine)
        for p in cfg.parties
    }
    alignment = align_local({n: PsiFiles(v.ids, space.aligned(n)) for n, v in validated.items()},
                            cfg.psi, label_party=cfg.label_party,
                            split_file=validated[cfg.label_party].split, hub=hub,
                            engines=cfg.engines)
    return {party.name: build_features(party, validated[party.name].table,
                                       alignment.files[party.name], space.features(party.name),
                                       party.engine, validated[party.name].events)
            for party in cfg.parties}


class LongLink:
    """A party's channel whose messages reach their peer `delay_s` after they are sent.

    The sender does not wait (a thread delivers each message in turn when it is due, so they
    keep their order); its peer waits that much longer for each, as over a long link, and takes
    local updates meanwhile.
    """

    def __init__(self, channel, delay_s: float) -> None:  # (a Channel)
        import queue
        import threading

        self.channel, self.me, self.delay_s = channel, channel.me, delay_s
        self._due: queue.Queue = queue.Queue()
        threading.Thread(target=self._deliver, daemon=True, name=f"link-{self.me}").start()

    def send(self, kind, to: str, table) -> None:
        import time

        self._due.put((time.monotonic() + self.delay_s, kind, to, table))

    def _deliver(self) -> None:
        import time

        while True:
            due, kind, to, table = self._due.get()
            time.sleep(max(0.0, due - time.monotonic()))
            self.channel.send(kind, to, table)

    def __getattr__(self, name: str):  # recv, ready, sent, received, close: the channel's own
        return getattr(self.channel, name)


def train_over_a_long_link(cfg: Config, features: dict[str, PartyFeatures],
                           out: dict[str, Path]):  # -> TrainResult
    """Split training on threads, each message twice `LINK_WAIT_S` on its way (`LongLink`).

    A batch's round trip then takes four times that: a long link's wait, so local updates step
    in it however busy the machine is.
    """
    import time
    from functools import partial

    from splitrec_core.channel import LocalHub
    from splitrec_core.training.local import label_result
    from splitrec_core.training.local_updates import LINK_WAIT_S
    from splitrec_core.training.party import PartyJob

    jobs = {p: PartyJob(p, cfg, features[p], out[p]) for p in features}
    hub, started = LocalHub(), time.time()
    outcomes = hub.run({p: partial(job, LongLink(hub.channel(p), 2 * LINK_WAIT_S))
                        for p, job in jobs.items()})
    label = cfg.label_party
    return label_result(cfg, features[label].test, outcomes, started, hub.stats().as_dict(),
                        out[label])


def burn_on_a_thread(cpu_s: float) -> float:
    """Keep a new thread busy until it has spent `cpu_s` CPU seconds; the seconds it spent.

    The thread reads its own CPU clock, so the amount is definite however busy the machine is.
    """
    import threading
    import time

    spent: list[float] = []

    def burn() -> None:
        start = time.thread_time()
        while time.thread_time() - start < cpu_s:
            pass
        spent.append(time.thread_time() - start)

    thread = threading.Thread(target=burn, name="burn-cpu")
    thread.start()
    thread.join()
    return spent[0]


def trial_security(parties: list[str], folder: Path) -> tuple[dict, dict[str, str]]:
    """Fresh trial credentials on 127.0.0.1: each party's `Security`, and every token's hash."""
    from splitrec_core.certs import make_trial_credentials
    from splitrec_core.channel.flight.auth import Security

    credentials = make_trial_credentials({p: ["127.0.0.1"] for p in parties}, folder)
    return ({p: Security.from_files(c) for p, c in credentials.items()},
            {p: c.token_sha256() for p, c in credentials.items()})


def raw_values(data_dir: Path) -> set[bytes]:
    """What must never cross between parties, as bytes to search payloads for.

    That is every raw ID, every distinctive category, and every numeric value as text and as float64
    where its bytes are distinctive (small integers like 7.0 end in six zero bytes, which ReLU zeros
    next to a float32 reproduce by chance). The label party's split flag and labels are left out:
    the split flag is sent on purpose.
    """
    import struct

    import pandas as pd

    needles: set[bytes] = set()
    for path in data_dir.glob("*.csv"):
        frame = pd.read_csv(path)
        for column in frame.columns:
            if column in ("split", "income_50k", "never_married"):
                continue
            values = frame[column].dropna().unique()
            if not pd.api.types.is_numeric_dtype(frame[column]):
                needles |= {str(v).encode() for v in values if len(str(v)) >= 4}
            else:
                packed = {struct.pack("<d", float(v)) for v in values}
                needles |= {b for b in packed if b[:4] != bytes(4)}
                needles |= {repr(float(v)).encode() for v in values if abs(v) >= 1000}
    return needles


def found_in(payload: bytes, needles: set[bytes]) -> list[bytes]:
    """The needles (4 bytes or longer) that occur in `payload`.

    Every 4-byte window of the payload is looked up among the needles' first 4 bytes at once, and a
    whole needle is compared only where one matches: a `needle in payload` per needle scans
    megabytes thousands of times over.
    """
    from collections import defaultdict

    import numpy as np

    by_prefix: dict[int, list[bytes]] = defaultdict(list)
    for needle in needles:
        assert len(needle) >= 4, needle
        by_prefix[int.from_bytes(needle[:4], "little")].append(needle)
    data = np.frombuffer(payload, np.uint8).astype(np.uint32)
    windows = data[:-3] | data[1:-2] << 8 | data[2:-1] << 16 | data[3:] << 24
    hits = np.flatnonzero(np.isin(windows, np.fromiter(by_prefix, np.uint32, len(by_prefix))))
    return sorted({n for i in hits.tolist() for n in by_prefix[int(windows[i])]
                   if payload.startswith(n, i)})


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """Synthetic parties trained once, split (with every payload recorded) and central."""
    from splitrec_core.channel import LocalHub
    from splitrec_core.training.central import train_central
    from splitrec_core.training.local import train_split_local
    from splitrec_core.workspace import Workspace

    run = tmp_path_factory.mktemp("train")
    write_parties(run / "data", 6000, seed=5)
    cfg = load_config(SYNTHETIC_TOML)
    hub = LocalHub(record=True)
    features = prepare_features(cfg, run, hub)
    space = Workspace(run)
    split = train_split_local(cfg, features, {p: space.trained(p) for p in features}, hub)
    central = train_central(cfg, features, space.central)
    return cfg, run, hub, features, split, central


def as_new_rows(frame, label_party: bool):  # pd.DataFrame -> pd.DataFrame
    """A synthetic party's rows as new rows to score the test people again.

    They are the label party's test rows without split and labels; a feature party's rows as
    they are.
    """
    if not label_party:
        return frame
    return frame[frame["split"] == "test"].drop(columns=["split", "income_50k", "never_married"])
