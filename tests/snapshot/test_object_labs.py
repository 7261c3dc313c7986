"""Labs on object stores (the moto S3 server on 127.0.0.1, and memory:// stores): racing
committers, lost acknowledgements, the conditional-write self-test, retries, two-phase
gc against concurrent writers, damaged refs, the command line and the object layout.

The Lab suite itself (commit, branches, refs, log/runs, checkout, diff, tags, verify)
runs on S3 as well as locally through the ``make_lab`` / ``history`` fixtures."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from snap_helpers import DIM

from oluo_lab.cas import StoreIOError
from oluo_lab.cas._backends import ObstoreBackend
from oluo_lab.cli import main
from oluo_lab.engine import OluoEngine
from oluo_lab.snapshot import HeadMoved, Lab, ManifestSerde, NotALab, UnsafeObjectStore
from oluo_lab.snapshot.history import generation_books
from oluo_lab.snapshot.objrefs import clear_self_tests


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _engine(n: int = 120, seed: int = 0) -> OluoEngine:
    eng = OluoEngine(DIM, metric="l2", compact_threshold=10_000, M=8, ef_construction=32)
    eng.add(_vectors(n, seed), ids=[f"s{seed}-{i}" for i in range(n)])
    return eng


def _keys(lab: Lab, directory: str) -> list[str]:
    return [i.name for i in lab.refs.backend.list_tree(directory)]


@pytest.fixture
def s3_lab(s3):
    def make(name: str = "lab", **options) -> Lab:
        return Lab(s3.url(name), **s3.options, **options)

    make.s3 = s3
    return make


@pytest.fixture
def fresh_self_tests():
    """Self-test results are cached per store for the process: start and end clean."""
    clear_self_tests()
    yield
    clear_self_tests()


# ----------------------------------------------------------------------------- races


def test_sixteen_racing_committers_one_winner_per_generation_none_lost(s3_lab):
    """16 writers (own Lab objects, threads) commit to main at once, twice: each round
    exactly one lands, every other gets HeadMoved naming that winner, and the history,
    the ref objects and the numbered log hold every winner exactly once."""
    lab = s3_lab("race")
    url, options = lab.location, lab.store_options
    first = lab.commit(_engine(), note="base", progress=False)
    winners = [first]
    for rnd in range(2):
        labs = [Lab.open(url, **options) for _ in range(16)]
        engines = [w.checkout("main", progress=False) for w in labs]
        for i, eng in enumerate(engines):
            eng.add(_vectors(3, 100 * rnd + i), ids=[f"r{rnd}-w{i}-{j}" for j in range(3)])
        start = threading.Barrier(16)

        def commit(i: int, labs=labs, engines=engines, start=start, rnd=rnd):
            start.wait()
            try:
                return labs[i].commit(engines[i], note=f"round {rnd} writer {i}", progress=False)
            except HeadMoved as exc:
                return exc

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(commit, range(16)))
        won = [r for r in results if not isinstance(r, HeadMoved)]
        lost = [r for r in results if isinstance(r, HeadMoved)]
        assert len(won) == 1 and len(lost) == 15
        assert all(e.found == won[0].cid and e.branch == "main" for e in lost)
        assert won[0].parent == winners[-1].cid and won[0].seq == len(winners) + 1
        winners.append(won[0])
    history = Lab.open(url, **options).history()
    assert [s.cid for s in history] == [w.cid for w in reversed(winners)]
    assert [s.seq for s in history] == [3, 2, 1]
    assert _keys(lab, "refs/heads/main") == [f"{n:020d}" for n in (1, 2, 3)]
    records = lab.refs.records()
    assert [r["seq"] for r in records] == [1, 2, 3] and len(_keys(lab, "log")) == 3
    report = lab.verify(progress=False)
    assert report and report.unreachable_books > 0  # the losers' books, on no branch


def test_a_lost_race_names_the_winner_and_retry_commits_on_top_of_it(s3_lab, monkeypatch):
    lab = s3_lab("retry")
    url, options = lab.location, lab.store_options
    base = lab.commit(_engine(), progress=False)
    lab.branch("f")
    feature = lab.checkout("f", progress=False)
    feature.add(_vectors(4, 1), ids=[f"f{i}" for i in range(4)])
    f1 = lab.commit(feature, progress=False)
    feature.add(_vectors(4, 2), ids=[f"g{i}" for i in range(4)])
    f2 = lab.commit(feature, progress=False)
    writer, other = Lab.open(url, **options), Lab.open(url, **options)
    eng = writer.checkout("f", progress=False)
    eng.add(_vectors(4, 3), ids=[f"h{i}" for i in range(4)])
    moves = []
    real = writer.refs.compare_and_set

    def racing(branch, expected, new):
        if moves:  # just before this writer's ref put, another one moves main
            other.branch("main", moves.pop(), force=True)
        return real(branch, expected, new)

    monkeypatch.setattr(writer.refs, "compare_and_set", racing)
    moves.append(f1.cid.hex)  # a fast-forward of main to f1 wins the race
    with pytest.raises(HeadMoved, match="retry=True") as ei:
        writer.commit(eng, branch="main", progress=False)
    assert ei.value.raced and ei.value.found == f1.cid and ei.value.expected == base.cid
    assert lab.head("main").cid == f1.cid  # the winner stands; nothing else moved
    moves.append(f2.cid.hex)  # the same race again, retried on top: f2 is still an ancestor
    snap = writer.commit(eng, branch="main", retry=True, progress=False)
    assert snap.parent == f2.cid and lab.head("main").cid == snap.cid and snap.seq == 4
    assert lab.log("main")["#"].tolist() == [4, 3, 2, 1]
    # a winner the engine does not descend from: retry refuses with the usual message
    stale = writer.checkout("main", progress=False)
    stale.add(_vectors(2, 4), ids=["x0", "x1"])
    rival = other.checkout("main", progress=False)
    rival.add(_vectors(2, 5), ids=["y0", "y1"])
    rivals = [rival]

    def diverging(branch, expected, new):
        if rivals:  # another writer commits a sibling first
            other.commit(rivals.pop(), progress=False)
        return real(branch, expected, new)

    monkeypatch.setattr(writer.refs, "compare_and_set", diverging)
    with pytest.raises(HeadMoved, match="moved on since this engine was checked out") as ei:
        writer.commit(stale, retry=True, progress=False)
    assert not ei.value.raced and ei.value.found == lab.head("main").cid != snap.cid


def test_a_lost_acknowledgement_is_read_back_as_success(s3_lab, monkeypatch):
    lab = s3_lab("lost-ack")
    lab.commit(_engine(), progress=False)
    backend = lab.refs.backend
    real = backend.put_if_absent
    lost = []

    def flaky(key, data):
        if key.startswith(("refs/", "log/")) and len(lost) < 2:
            lost.append(key)
            real(key, data)  # the put lands ...
            raise StoreIOError("put", key, ConnectionResetError("connection reset by peer"))
        return real(key, data)

    monkeypatch.setattr(backend, "put_if_absent", flaky)
    eng = lab.checkout(progress=False)
    eng.add(_vectors(5, 1), ids=[f"n{i}" for i in range(5)])
    snap = lab.commit(eng, progress=False)  # ... and the readback finds its own write id
    assert lost == ["refs/heads/main/00000000000000000002", "log/00000000000000000002"]
    assert snap.seq == 2 and lab.head().cid == snap.cid
    assert _keys(lab, "refs/heads/main") == [f"{n:020d}" for n in (1, 2)]
    assert [r["seq"] for r in lab.refs.records()] == [1, 2]  # one record, not two
    lab.tag("t")  # tags too
    assert lab.tags() == {"t": snap.cid} and len(_keys(lab, "refs/tags")) == 1


def test_the_self_test_refuses_writes_where_conditional_writes_are_ignored(
    s3_lab, monkeypatch, fresh_self_tests
):
    lab = s3_lab("unsafe")
    assert lab.refs.unsafe is None  # moto honours If-None-Match
    first = lab.commit(_engine(), progress=False)
    url, options = lab.location, lab.store_options

    def ignoring(self, key, data):  # a server that drops the condition: put overwrites
        self.obs.put(self.store, self._k(key), memoryview(data))
        return True

    monkeypatch.setattr(ObstoreBackend, "put_if_absent", ignoring)
    clear_self_tests()
    bad = Lab.open(url, **options)
    assert "ignores conditional writes" in bad.refs.unsafe
    before = sorted(bad.refs.backend.list_tree(""), key=lambda o: o.name)
    eng = bad.checkout(progress=False)  # reading works
    eng.add(_vectors(3, 1), ids=["a", "b", "c"])
    for write in (
        lambda: bad.commit(eng, progress=False),
        lambda: bad.tag("t"),
        lambda: bad.branch("b"),
        lambda: bad.gc(dry_run=False, progress=False),
    ):
        with pytest.raises(UnsafeObjectStore, match="single_writer=True"):
            write()
    assert sorted(bad.refs.backend.list_tree(""), key=lambda o: o.name) == before
    assert bad.log()["#"].tolist() == [1] and bad.gc(progress=False).dry_run
    # one writer that says it is alone may write
    alone = Lab.open(url, single_writer=True, **options)
    assert alone.commit(eng, progress=False).parent == first.cid


# ----------------------------------------------------------------------------- gc


def test_gc_is_two_phase_and_a_writer_revives_what_it_reuses(s3_lab):
    lab = s3_lab("gc")
    main_snap = lab.commit(_engine(), progress=False)
    tmp = lab.commit(_engine(150, seed=9), branch="tmp", params={"p": 1}, progress=False)
    only_tmp = generation_books(lab.store, tmp.cid) - generation_books(lab.store, main_snap.cid)
    lab.delete_branch("tmp")
    first = lab.gc(dry_run=False, grace_s=0, progress=False)
    # phase 1: tombstones, nothing deleted, everything still readable
    assert first.tombstoned_books == len(only_tmp) and first.deleted_books == 0
    assert "tombstoned" in repr(first) and lab.store.tombstoned() == only_tmp
    assert all(lab.store.has(c) for c in only_tmp)
    waiting = lab.gc(dry_run=False, grace_s=3600, progress=False)
    assert (waiting.deleted_books, waiting.pending_books) == (0, len(only_tmp))
    # the same build committed again: its books are tombstoned, so they are put again
    again = lab.commit(_engine(150, seed=9), branch="again", params={"p": 1}, progress=False)
    assert again.cid == tmp.cid and again.seq == tmp.seq
    assert lab.store.tombstoned() == set()  # revived: a copy no tombstone names
    second = lab.gc(dry_run=False, grace_s=0, progress=False)
    assert second.deleted_books == 0 and second.pending_books == 0
    assert second.tombstoned_books == 1  # the nonce book of the renewed pack, now garbage
    assert all(c in lab.store for c in only_tmp)  # the reused books survive
    assert lab.verify(progress=False)
    assert len(lab.checkout("again", progress=False)) == 150
    lab.delete_branch("again")
    third = lab.gc(dry_run=False, grace_s=0, progress=False)
    done = lab.gc(dry_run=False, grace_s=0, progress=False)
    assert (third.deleted_books, third.tombstoned_books) == (1, len(only_tmp))
    assert done.deleted_books == len(only_tmp) and not (only_tmp & set(lab.store))
    assert done.store.packs_deleted > 0 and "packs: wrote" in repr(done)
    report = lab.verify(progress=False)
    assert report and report.unreachable_books == 0


def test_a_ref_moved_during_gc_keeps_the_books_it_names(s3_lab, monkeypatch):
    """A branch set to a tombstoned commit between gc's marking and its sweep (no lock
    exists to stop it): the books are stored again first, so the sweep keeps them."""
    lab = s3_lab("gc-race")
    lab.commit(_engine(), progress=False)
    old = lab.commit(_engine(120, seed=5), branch="old", progress=False)
    lab.delete_branch("old")
    lab.gc(dry_run=False, grace_s=0, progress=False)  # phase 1: old's books tombstoned
    writer = Lab.open(lab.location, **lab.store_options)
    real = type(lab.store).sweep

    def sweep_after_a_writer(store, *args, **kwargs):
        writer.branch("back", old.cid.hex)  # after gc marked, before it sweeps
        return real(store, *args, **kwargs)

    monkeypatch.setattr(lab.store, "sweep", sweep_after_a_writer.__get__(lab.store))
    report = lab.gc(dry_run=False, grace_s=0, progress=False)
    assert report.deleted_books <= 1  # at most the nonce book of the renewed pack
    assert lab.verify(progress=False)
    assert len(lab.checkout("back", progress=False)) == 120


# ----------------------------------------------------------------------------- refs


def test_a_damaged_ref_object_is_reported_and_repaired(s3_lab):
    lab = s3_lab("damaged")
    eng = _engine()
    lab.commit(eng, progress=False)
    eng.add(_vectors(5, 1), ids=[f"n{i}" for i in range(5)])
    second = lab.commit(eng, progress=False)
    lab.refs.backend.put_create("refs/heads/main/00000000000000000003", b"{broken")
    fresh = Lab.open(lab.location, **lab.store_options)
    with pytest.raises(ManifestSerde, match="refs/heads/main/00000000000000000003"):
        fresh.head()
    report = fresh.verify(progress=False)
    assert not report and report.errors[0].where == "refs/heads/main/"
    assert len(fresh.checkout(1, progress=False)) == 120  # numbers still resolve
    assert fresh.repair_head().cid == second.cid
    assert fresh.head().cid == second.cid and fresh.verify(progress=False)
    assert _keys(fresh, "refs/heads/main")[-1] == f"{4:020d}"


def test_object_layout_and_names(s3_lab):
    lab = s3_lab("layout")
    snap = lab.commit(_engine(), branch="sweep/M=8,ef=32", progress=False)
    lab.tag("best", snap.cid.hex)
    lab.tag("best", snap.cid.hex)  # the same value: no new object
    keys = _keys(lab, "")
    assert "oluo-lab-format" in keys and "cas/oluo-cas-format" in keys
    assert "refs/heads/sweep~M=8,ef=32/00000000000000000001" in keys
    assert "refs/tags/best/00000000000000000001" in keys and "log/00000000000000000001" in keys
    assert not [k for k in keys if k.startswith("selftest/")]  # the probe is removed
    ref = json.loads(lab.refs.backend.read("refs/heads/sweep~M=8,ef=32/00000000000000000001"))
    assert ref["head"] == snap.cid.hex and ref["n"] == 1 and ref["old"] is None
    assert ref["branch"] == "sweep/M=8,ef=32" and len(ref["write_id"]) == 32
    assert lab.branches()["branch"].tolist() == ["sweep/M=8,ef=32"]
    lab.untag("best")
    assert lab.tags() == {} and len(_keys(lab, "refs/tags/best")) == 2
    with pytest.raises(KeyError):
        lab.untag("best")
    assert repr(lab) == f"Lab({lab.location!r}, branch main: empty, 1 commit, 1 branch)"


def test_memory_labs_are_shared_in_the_process_and_new_labs_need_an_empty_prefix():
    lab = Lab("memory://shared-test/a/")
    snap = lab.commit(_engine(), progress=False)
    assert Lab.open("memory://shared-test/a").head().cid == snap.cid
    with pytest.raises(NotALab, match="no oluo-lab-format"):
        Lab.open("memory://shared-test/b")
    lab.refs.backend.child("c").put_create("oluo_head.json", b"{}")  # a copied lab directory
    with pytest.raises(NotALab, match="empty prefix"):
        Lab("memory://shared-test/a/c")
    with pytest.raises(TypeError, match="store options"):
        Lab("local-dir", endpoint="http://127.0.0.1:1")


# ----------------------------------------------------------------------------- CLI


def test_cli_on_an_s3_lab_with_options_and_environment(s3_lab, capsys, monkeypatch):
    lab = s3_lab("cli")
    eng = _engine()
    lab.commit(eng, note="one", params={"M": 8}, progress=False)
    eng.add(_vectors(5, 1), ids=[f"n{i}" for i in range(5)])
    lab.commit(eng, note="two", progress=False)
    s3 = s3_lab.s3
    opts = ["-o", f"endpoint={s3.endpoint}", "-o", "allow_http=true"]
    for k, v in s3.env.items():  # credentials and region from the environment
        if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            monkeypatch.setenv(k, v)
    url = lab.location
    assert main(["log", url, *opts]) == 0
    assert "two" in capsys.readouterr().out
    assert main(["runs", url, "--json", *opts]) == 0
    assert [r["#"] for r in json.loads(capsys.readouterr().out)] == [2, 1]
    assert main(["show", url, "1", *opts]) == 0 and "one" in capsys.readouterr().out
    assert main(["diff", url, "1", "2", "--no-semantic", *opts]) == 0
    assert "5" in capsys.readouterr().out
    assert main(["tag", url, "first", "1", *opts]) == 0
    assert main(["branch", url, "exp", "first", *opts]) == 0
    capsys.readouterr()
    assert main(["branch", url, "--json", *opts]) == 0
    assert [b["branch"] for b in json.loads(capsys.readouterr().out)] == ["main", "exp"]
    assert main(["verify", url, *opts]) == 0
    assert main(["gc", url, "--run", "--grace", "0", *opts]) == 0
    assert main(["compare", url, "1", "2", *opts]) == 0
    capsys.readouterr()
    assert main(["log", url, "-o", "nonsense"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    # everything from the environment
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    assert main(["log", url, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_moto_server_in_its_own_process_serves_a_store_and_stops_with_its_owner():
    """``MotoS3(process=True)`` (the benchmark's server): a store round-trips through the
    child process on 127.0.0.1, and stopping the owner ends the child and frees its port."""
    import socket
    from urllib.parse import urlsplit

    from oluo_lab.cas import CID, PackStore
    from oluo_lab.testing.s3 import MotoS3

    server = MotoS3(process=True).start()
    try:
        child = server._child
        assert child is not None and child.poll() is None
        host, port = urlsplit(server.endpoint).hostname, urlsplit(server.endpoint).port
        assert host == "127.0.0.1" and port
        url = server.url("child")
        data = b"served from another process" * 100
        store = PackStore(url, **server.options)
        with store.batch():
            cid = store.put(data)
        assert cid == CID.for_book(data)
        assert PackStore(url, **server.options).get(cid) == data  # a fresh client reads it
    finally:
        server.stop()
    assert child.returncode is not None
    with pytest.raises(OSError), socket.create_connection((host, port), timeout=2):
        pass
