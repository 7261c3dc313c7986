"""Lab.sweep on a dask.distributed LocalCluster (2 worker processes on 127.0.0.1): the
workers build, evaluate and commit into the shared lab (a local directory, and a lab on
the moto S3 server), giving the same commit ids as a serial sweep of the same grid."""

from __future__ import annotations

import pytest
from snap_helpers import SWEEP_QUERIES, build_for_sweep, build_with_two_threads

from oluo_lab.snapshot import Lab
from oluo_lab.snapshot.sweep import SweepTask, _submit, run_point

distributed = pytest.importorskip("distributed", reason="needs the 'dask' extra")

GRID = {"M": [4, 8], "ef_construction": [16, 32]}


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes on loopback, no dashboard; closed at the end."""
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def test_a_dask_sweep_into_a_local_lab_gives_the_serial_commit_ids(client, tmp_path):
    serial = Lab(tmp_path / "serial").sweep(
        build_for_sweep, GRID, evaluate=SWEEP_QUERIES, progress=False
    )
    shared = Lab(tmp_path / "shared")
    runs = shared.sweep(
        build_for_sweep, GRID, evaluate=SWEEP_QUERIES, executor=client, progress=False
    )
    assert runs["commit"].tolist() == serial["commit"].tolist()
    assert runs["sweep"].tolist() == ["committed"] * 4
    assert runs["recall@10"].tolist() == serial["recall@10"].tolist()
    timings = shared.runs(timings=True)
    assert (timings["qps"] > 0).all()  # measured on the workers, recorded in the log
    assert sorted(shared.log()["#"]) == [1, 2, 3, 4] and shared.verify(progress=False)
    # run again: every point is already there, nothing is sent to the cluster
    again = shared.sweep(build_for_sweep, GRID, evaluate=SWEEP_QUERIES, executor=client)
    assert again["sweep"].tolist() == ["skipped"] * 4


def test_a_dask_sweep_into_an_s3_lab_with_two_faiss_threads_per_task(client, s3):
    grid = [{"M": 4, "ef_construction": 16}, {"M": 8, "ef_construction": 32}]
    lab = Lab(s3.url("dask"), **s3.options)
    runs = lab.sweep(
        build_with_two_threads,
        grid,
        evaluate=SWEEP_QUERIES,
        executor=client,
        threads=2,
        progress=False,
    )
    serial = Lab(s3.url("dask-serial"), **s3.options).sweep(
        build_with_two_threads, grid, evaluate=SWEEP_QUERIES, threads=2, progress=False
    )
    assert runs["commit"].tolist() == serial["commit"].tolist()
    assert Lab.open(lab.location, **s3.options).verify(progress=False)
    # by default each task on a cluster builds with one thread: the check refuses it
    with pytest.raises(RuntimeError, match="not 2"):
        lab.sweep(build_with_two_threads, grid[:1], executor=client, prefix="one", progress=False)


def test_dask_never_answers_a_sweep_task_from_an_earlier_result(client, tmp_path):
    """The same task twice gets two keys (pure=False): timings are measured each time."""
    task = SweepTask(
        lab=str(tmp_path / "x"),
        options={},
        threads=1,
        branch="b",
        point={"M": 4, "ef_construction": 16},
        params={},
        note="",
        queries=None,
        k=10,
        ef_search=None,
        timings=True,
        compact_threshold=1000,
    )
    first, second = _submit(client, task, build_for_sweep), _submit(client, task, build_for_sweep)
    assert first.key != second.key
    pure = [client.submit(run_point, build_for_sweep, task) for _ in range(2)]
    assert pure[0].key == pure[1].key  # what Dask does by default
    for fut in (first, second, *pure):
        fut.cancel()
