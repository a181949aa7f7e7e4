"""A party's steps on its own Dask cluster (`engine = "dask"`, splitrec_core/engine.py).

Validation, PSI blinding and features give the same files as on its threads, and a worker
killed mid-stage costs time, not the result.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import WorkerPlugin

from splitrec_core.config import EngineConfig, load_config
from splitrec_core.datasets.synthetic import write_parties
from splitrec_core.features import build_features
from splitrec_core.psi.points import Blinder, hash_to_points
from splitrec_core.validate import validate_party
from tests.conftest import SYNTHETIC_TOML, prepare_features


@pytest.fixture(scope="module")
def dask_client():
    """A LocalCluster and its client.

    Two single-threaded worker processes, each watched by a nanny that restarts it.
    """
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def test_blinding_on_dask_commutes_with_blinding_on_threads(dask_client):
    # X25519 clamps scalars, so raising to a then b equals raising to b then a: only if both
    # blinders computed every point right. On Dask, a worker task hashes and blinds a chunk
    ids = [f"person-{i}" for i in range(3000)]
    chunks = [ids[i : i + 250] for i in range(0, len(ids), 250)]
    with (Blinder(block=256, executor=dask_client.get_executor()) as on_dask,
          Blinder() as on_threads):
        dask_then_threads = on_threads.blind(on_dask.blind_ids(chunks, "test-domain", len(ids)))
        threads_then_dask = on_dask.blind(on_threads.blind_ids(chunks, "test-domain", len(ids)))

    assert dask_then_threads.shape == (3000, 32)
    np.testing.assert_array_equal(dask_then_threads, threads_then_dask)
    assert len({row.tobytes() for row in dask_then_threads}) == 3000


class _DieMidStage(WorkerPlugin):
    """A worker plugin: the worker at `victim` exits hard as it finishes its `after`-th task.

    So it dies inside the stage however fast the machine (its nanny then starts another worker,
    at another address, that the plugin spares).
    """

    def __init__(self, victim: str, after: int) -> None:
        self.victim, self.after, self.finished, self.address = victim, after, 0, None

    def setup(self, worker) -> None:
        self.address = worker.address

    def transition(self, key, start, finish, **kwargs) -> None:
        if finish == "memory" and self.address == self.victim:
            self.finished += 1
            if self.finished == self.after:
                os._exit(1)


@contextmanager
def _one_worker_dies_mid_stage(client, after: int = 3) -> Iterator[str]:
    """Within the block, one of the cluster's workers dies as it finishes its `after`-th task.

    Yields its address.
    """
    victim = min(client.scheduler_info()["workers"])
    client.register_plugin(_DieMidStage(victim, after), name="die-mid-stage")
    try:
        yield victim
    finally:
        client.unregister_worker_plugin("die-mid-stage")


def test_a_worker_killed_mid_blinding_leaves_the_result_unchanged(dask_client):
    # Prepare: enough blocks that the stage is still running when a worker dies
    points = hash_to_points([f"person-{i}" for i in range(120_000)], "test-domain")
    with Blinder(block=500, executor=dask_client.get_executor()) as on_dask:
        # Execute: blind on the cluster; one worker process exits hard after 3 of the 240 blocks
        with _one_worker_dies_mid_stage(dask_client) as victim:
            blinded = on_dask.blind(points)
        # the same scalar, undisturbed (that blinding on Dask is right: the test above)
        undisturbed = on_dask.blind(points)

    # Assert: the worker was lost (its nanny started another), and every point is as without
    assert victim not in dask_client.scheduler_info()["workers"]
    np.testing.assert_array_equal(blinded, undisturbed)


def test_a_party_on_its_dask_cluster_aligns_exactly_as_on_its_threads(tmp_path: Path):
    # Prepare: the synthetic config, and the same with the bank on a LocalCluster of its own
    text = SYNTHETIC_TOML.read_text()
    bank = 'numeric = ["balance"]\n'
    assert bank in text
    engine = '\n[parties.engine]\nkind = "dask"\nworkers = 2\nmemory_limit = "1GiB"\n'
    (tmp_path / "dask.toml").write_text(text.replace(bank, bank + engine))
    on_threads, on_dask = load_config(SYNTHETIC_TOML), load_config(tmp_path / "dask.toml")
    for run in ("threads", "dask"):
        write_parties(tmp_path / run / "data", 1500, seed=3)

    # Execute: validate and align (the test entropy pins the private shuffles)
    prepare_features(on_threads, tmp_path / "threads")
    prepare_features(on_dask, tmp_path / "dask")

    # Assert: the bank's engine is Dask, and every party's common order, checked table and
    # features are the same
    assert [p.engine.kind for p in on_dask.parties] == ["local", "dask", "local"]
    for party in ("advertiser", "bank", "media"):
        folder = Path("parties") / party
        for written in ("aligned.parquet", "validated/validated.parquet", "features/train.parquet",
                        "features/test.parquet"):
            tables = [pq.read_table(tmp_path / run / folder / written)
                      for run in ("threads", "dask")]
            assert tables[0].num_rows > 300
            assert tables[0].equals(tables[1]), f"{party}: {written}"
        transforms = [(tmp_path / run / folder / "features" / "transform.json").read_text()
                      for run in ("threads", "dask")]
        assert transforms[0] == transforms[1]


def test_a_worker_killed_mid_validation_leaves_every_file_unchanged(dask_client, tmp_path: Path):
    # Prepare: the bank's 300,000 people in row groups of 10,000; its file checked and its
    # features built on its threads (the reference); its cluster's address as its engine
    cfg = load_config(SYNTHETIC_TOML)
    bank = cfg.party("bank").model_copy(update={"file": "bank.parquet"})
    path = write_parties(tmp_path / "data", 300_000, seed=1, block_rows=10_000,
                         suffix=".parquet")["bank"]
    on_threads = validate_party(bank, path, tmp_path / "threads")
    rows = on_threads.rows
    aligned = tmp_path / "aligned.parquet"
    pq.write_table(pa.table({"row": np.random.default_rng(0).permutation(rows)[: rows // 2],
                             "position": np.arange(rows // 2),
                             "is_train": np.arange(rows // 2) % 3 > 0}), aligned)
    reference = build_features(bank, on_threads.table, aligned, tmp_path / "threads" / "features")
    engine = EngineConfig(kind="dask", address=dask_client.scheduler.address)

    # Execute: validate on the cluster, one worker process exiting hard after 3 of the 30 row
    # groups; then features
    with _one_worker_dies_mid_stage(dask_client) as victim:
        on_dask = validate_party(bank, path, tmp_path / "dask", engine=engine)
    features = build_features(bank, on_dask.table, aligned, tmp_path / "dask" / "features", engine)

    # Assert: the worker was lost, and every file is as on threads
    assert victim not in dask_client.scheduler_info()["workers"]
    assert pq.ParquetFile(on_dask.table).metadata.num_row_groups == 30
    for ours, theirs in ((on_dask.table, on_threads.table), (on_dask.ids, on_threads.ids),
                         (features.train, reference.train), (features.test, reference.test)):
        assert pq.read_table(ours).equals(pq.read_table(theirs))
    assert features.transform.read_text() == reference.transform.read_text()


def _scheduler_address() -> str:
    """Run on a Dask worker: the address of the scheduler it serves."""
    from distributed import get_worker

    return get_worker().scheduler.address


def test_a_party_flow_on_its_dask_engine_runs_its_steps_on_its_task_runner_s_cluster(
        prefect_api, tmp_path: Path):
    # Prepare: a party flow on the task runner of a Dask engine (prefect-dask's DaskTaskRunner,
    # a LocalCluster of 1 worker for the run); the bank's file in 3 row groups
    from prefect import flow
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner

    from splitrec_core.engine import party_executor
    from tasks._common import on_run_cluster, party_task_runner

    engine = EngineConfig(kind="dask", workers=1, memory_limit="1GiB")
    bank = load_config(SYNTHETIC_TOML).party("bank").model_copy(update={"file": "bank.parquet"})
    path = write_parties(tmp_path / "data", 3000, seed=1, block_rows=1000,
                         suffix=".parquet")["bank"]

    @flow(task_runner=party_task_runner(engine))
    def party_steps() -> tuple[str, str, Path]:
        runner_cluster = FlowRunContext.get().task_runner.client.scheduler.address
        with on_run_cluster(), party_executor(engine) as executor:
            ran_on = executor.submit(_scheduler_address).result()
            validated = validate_party(bank, path, tmp_path / "flow", engine=engine)
        return runner_cluster, ran_on, validated.table

    # Execute
    runner_cluster, ran_on, table = party_steps()

    # Assert: the step's work ran on the cluster the flow's task runner started, and the checked
    # table is the one the party's threads write
    assert isinstance(party_task_runner(engine), DaskTaskRunner)
    assert ran_on == runner_cluster
    on_threads = validate_party(bank, path, tmp_path / "threads")
    assert pq.read_table(table).equals(pq.read_table(on_threads.table))
