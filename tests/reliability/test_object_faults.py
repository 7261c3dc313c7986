"""Faults below the process on a lab on an object store (``memory://``; read-only
credentials also on the moto S3 server).

Every request of :class:`~oluo_lab.cas._backends.ObstoreBackend` goes through one hook
(``set_object_hook``). A clean run of each operation (commit, gc, tag, checkout) is
recorded there as (request, object) steps, objects named by their role
(``cas/packs/PACK``, ``refs/heads/main/N``, ``log/N``). Each trial then fails the first or
the last occurrence of one step with one fault, the faults taken in turn: a server error
(500), throttling (503 SlowDown), and a timeout, either before the request reaches the
server or after it landed (a lost acknowledgement; reads only fail before). It requires:

1. the call raises ``PersistIOError`` or ``StoreIOError`` whose message names the object
   and the request (or completes, when the failed request was one it may retry or skip);
2. a fresh reader sees exactly the previous or exactly the new state, and the previous
   head still checks out;
3. the same call, retried once the fault is gone, leaves exactly the state of a clean
   run: the same heads, tags and log, each commit once and numbered as in a clean run;
4. after two gc runs (two-phase on an object store), ``verify()`` is clean and nothing
   is unreachable.

Read-only credentials: a hook refusing every write with the server's permission error
(moto's server cannot be given read-only credentials without turning on its IAM
emulation for the whole session); reads work and write nothing, writers raise
``ReadOnlyLab`` before their first request.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from obstore.exceptions import GenericError, PermissionDeniedError

from oluo_lab.cas import StoreIOError
from oluo_lab.cas import _backends as backends
from oluo_lab.cas.packs import make_backend
from oluo_lab.engine import OluoEngine
from oluo_lab.snapshot import Lab, PersistIOError, ReadOnlyLab

pytestmark = pytest.mark.reliability

DIM = 8
OPS = ("commit", "gc", "tag", "checkout")
_READS = ("get", "get_ranges", "head", "list")
_WRITES = ("put", "put_create", "delete")
#: (name, exception, whether the request landed before it was raised)
FAULTS = (
    ("500", "Server returned non-2xx status code: 500 Internal Server Error", False),
    ("throttled", "Server returned non-2xx status code: 503 Slow Down: SlowDown", False),
    ("timeout", "error sending request: operation timed out", False),
    ("lost ack", "error sending request: operation timed out", True),
)
_names = itertools.count()
#: how an error message names each request
_VERBS = {
    "put": ("put", "write"),
    "put_create": ("put", "write", "create"),
    "head": ("put", "head"),
    "get": ("get", "read"),
    "get_ranges": ("get", "read"),
    "list": ("list",),
    "delete": ("delete",),
}


def role(key: str) -> str:
    """An object key named by its role (stable across runs)."""
    key = re.sub(r"^.*?(?=(cas|refs|log|selftest)/|oluo-lab-format$)", "", key, count=1)
    for pattern, repl in (
        (r"packs/[0-9a-f]+\.olp$", "packs/PACK"),
        (r"index/[0-9a-f]+\.oli$", "index/INDEX"),
        (r"tombs?[a-z]*/[0-9a-f]+\.[a-z]+$", "tombs/TOMB"),
        (r"/[0-9]{20}$", "/N"),
        (r"selftest/[0-9a-f]+$", "selftest/PROBE"),
    ):
        key = re.sub(pattern, repl, key)
    return key


class Faults:
    """An object hook: records (request, role) of every request; fails the ``nth``
    request of step ``target`` with ``fault`` (once)."""

    def __init__(self, target: tuple[str, str] | None = None, nth: int = 0, fault=None):
        self.target, self.nth, self.fault = target, nth, fault
        self.steps: list[tuple[str, str]] = []
        self.seen = 0
        self.fired: str | None = None

    def __call__(self, op: str, key: str, request: Callable[[], object]) -> object:
        step = (op, role(key))
        self.steps.append(step)
        if step != self.target or self.fired is not None:
            return request()
        self.seen += 1
        if self.seen != self.nth:
            return request()
        self.fired = key
        _, text, landed = self.fault
        if landed:
            request()
        raise GenericError(f"Generic S3 error: Error performing {op} {key}: {text}")


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _engine() -> OluoEngine:
    eng = OluoEngine(DIM, metric="l2", compact_threshold=10_000, M=8, ef_construction=16)
    eng.add(_vectors(150, 0), ids=[f"a{i}" for i in range(150)])
    return eng


class Site:
    """Where trial labs live: fresh ``memory://`` stores, or fresh prefixes on moto."""

    def __init__(self, s3=None) -> None:
        self.s3 = s3
        self.options = {} if s3 is None else s3.options

    def new_url(self) -> str:
        return f"memory://faults-{next(_names)}/lab" if self.s3 is None else self.s3.url("lab")

    def open(self, url: str) -> Lab:
        return Lab.open(url, **self.options)

    def fresh(self, template: str) -> str:
        """A new lab holding every object of ``template``."""
        url = self.new_url()
        a, _ = make_backend(template, **self.options)
        b, _ = make_backend(url, **self.options)
        for info in a.list_tree(""):
            b.put_replace(info.name, a.read(info.name))
        return url


def _template(site: Site) -> str:
    """A lab with three commits on main (the middle one tagged ``v1``, the oldest beyond
    ``keep_last=2``) and a deleted branch's commit for gc to collect."""
    url = site.new_url()
    lab = Lab(url, **site.options)
    eng = _engine()
    lab.commit(eng, note="one", progress=False)
    lab.branch("side")
    side = lab.checkout("side", progress=False)
    side.add(_vectors(20, 9), ids=[f"s{i}" for i in range(20)])
    lab.commit(side, note="side", progress=False)
    lab.checkout("main", progress=False)
    lab.delete_branch("side")
    eng = lab.checkout("main", progress=False)
    eng.add(_vectors(30, 1), ids=[f"b{i}" for i in range(30)])
    lab.commit(eng, note="two", progress=False)
    lab.tag("v1")
    eng.add(_vectors(30, 2), ids=[f"c{i}" for i in range(30)])
    lab.commit(eng, note="three", progress=False)
    return url


@pytest.fixture(scope="module")
def memory() -> tuple[Site, str]:
    site = Site()
    return site, _template(site)


def _setup(site: Site, op: str, url: str) -> Callable[[], object]:
    """The call under test, prepared outside the injection (so a retry is the same
    call); it returns what the caller is told (a commit's id and number, the answers)."""
    lab = site.open(url)
    if op == "commit":
        eng = lab.checkout("main", progress=False)
        eng.add(_vectors(25, 3), ids=[f"d{i}" for i in range(25)])
        eng.delete(["a0", "a1"])

        def commit() -> object:
            snap = lab.commit(eng, note="trial", run=7, progress=False)
            return snap.cid, snap.seq, snap.parent

        return commit
    if op == "gc":
        return lambda: lab.gc(dry_run=False, grace_s=0, keep_last=2, progress=False) and None
    if op == "tag":
        return lambda: lab.tag("best", "HEAD~1").cid
    assert op == "checkout"
    return lambda: lab.checkout("v1", progress=False).search(_vectors(3, 5), k=4).ids.tolist()


def _observe(site: Site, url: str) -> tuple:
    """What a fresh reader sees: heads, tags, the log (CID and number of each commit),
    and the answers of the head's engine."""
    lab = site.open(url)
    log = tuple((s.cid.hex, s.seq) for s in lab.history())
    answers = lab.checkout("main", progress=False).search(_vectors(3, 5), k=4).ids.tolist()
    heads = tuple(sorted((b, h.cid.hex) for b, h in lab.refs.branches().items()))
    tags = tuple(sorted((t, c.hex) for t, c in lab.tags().items()))
    return heads, tags, log, answers


def _trials(steps: list[tuple[str, str]]) -> list[tuple[tuple[str, str], int, tuple]]:
    """(step, nth, fault) of every trial: the first and the last occurrence of each step,
    faults in turn (reads never 'land'); the first write with every fault."""
    counts = Counter(steps)
    out = []
    for i, key in enumerate(sorted(counts)):
        faults = [f for f in FAULTS if not (f[2] and key[0] in _READS)]
        for nth in sorted({1, counts[key]}):
            out.append((key, nth, faults[(i + nth) % len(faults)]))
    writes = [s for s in steps if s[0] in _WRITES]
    if writes:
        out += [(writes[0], 1, f) for f in FAULTS if (writes[0], 1, f) not in out]
    return out


def _run(call: Callable[[], object], hook: Faults) -> tuple[object, BaseException | None]:
    prev = backends.set_object_hook(hook)
    try:
        return call(), None
    except Exception as exc:  # judged by the caller
        return None, exc
    finally:
        backends.set_object_hook(prev)


def _check_faults(site: Site, template: str, op: str, every: int = 1) -> Counter[str]:
    """Run the trials of ``op`` (every ``every``-th) on copies of ``template``."""
    prev = _observe(site, template)
    clean = site.fresh(template)
    rec = Faults()
    told, raised = _run(_setup(site, op, clean), rec)
    assert raised is None, raised
    new = _observe(site, clean)
    trials = _trials(rec.steps)
    assert len(trials) >= 10, f"{op}: only {len(trials)} trials"
    outcomes: Counter[str] = Counter()
    for key, nth, fault in trials[::every]:
        where = f"{op}: {key[0]} {key[1]} #{nth} -> {fault[0]}"
        url = site.fresh(template)
        call = _setup(site, op, url)
        inj = Faults(key, nth, fault)
        got, raised = _run(call, inj)
        assert inj.fired, f"{where}: the request was not made"
        if raised is not None:
            assert isinstance(raised, PersistIOError | StoreIOError), f"{where}: {raised!r}"
            text = str(raised)
            assert "cannot " in text and fault[1] in text, f"{where}: {text}"
            obj = inj.fired.rstrip("/").rpartition("/")[2]
            assert obj in text, f"{where}: {text} does not name {obj}"
            verbs = _VERBS[key[0]]
            assert any(f"cannot {v} " in text for v in verbs), f"{where}: {text} says no {verbs}"
            seen = _observe(site, url)
            assert seen in (prev, new), f"{where}: neither the previous nor the new state"
            outcomes["raised, saw " + ("new" if seen == new and seen != prev else "prev")] += 1
            got = call()  # the retry, the fault gone
        else:
            outcomes["completed"] += 1
        assert got == told, f"{where}: told {got}, a clean run tells {told}"
        assert _observe(site, url) == new, f"{where}: the retry left another state"
        lab = site.open(url)
        lab.gc(dry_run=False, grace_s=0, progress=False)
        lab.gc(dry_run=False, grace_s=0, progress=False)
        rep = site.open(url).verify(progress=False)
        assert not rep.problems and not rep.unreachable_books, f"{where}: after gc: {rep!r}"
        assert _observe(site, url) == new, f"{where}: gc changed what a reader sees"
    return outcomes


@pytest.mark.parametrize("op", OPS)
def test_every_object_request_fails_typed_and_nothing_is_lost(memory, op):
    outcomes = _check_faults(*memory, op)
    assert outcomes["raised, saw prev"] + outcomes["raised, saw new"] >= 2, outcomes


def test_object_request_faults_on_s3(s3):
    """The same on the moto server (real HTTP requests), for a commit: every third
    trial."""
    site = Site(s3)
    outcomes = _check_faults(site, _template(site), "commit", every=3)
    assert outcomes["raised, saw prev"] >= 3, outcomes


# ------------------------------------------------------------------ read-only credentials


class ReadOnlyCredentials:
    """An object hook refusing every write as a server does for read-only credentials
    (403 AccessDenied); records the writes asked for."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str]] = []

    def __call__(self, op: str, key: str, request: Callable[[], object]) -> object:
        if op in _WRITES:
            self.writes.append((op, role(key)))
            raise PermissionDeniedError(
                f"Error performing {op} {key}: Server returned non-2xx status code: "
                "403 Forbidden: AccessDenied"
            )
        return request()


@pytest.fixture(params=["memory", "s3"])
def shared_lab(request) -> tuple[str, dict]:
    """A lab with two commits, a branch and a tag: on a memory store, or on moto."""
    if request.param == "memory":
        url, options = f"memory://faults-{next(_names)}/shared", {}
    else:
        s3 = request.getfixturevalue("s3")
        url, options = s3.url("readonly"), s3.options
    lab = Lab(url, **options)
    eng = _engine()
    lab.commit(eng, note="one", progress=False)
    lab.tag("v1")
    lab.branch("exp")
    eng.add(_vectors(30, 1), ids=[f"b{i}" for i in range(30)])
    lab.commit(eng, note="two", progress=False)
    return url, options


def test_read_only_credentials_read_everything_and_refuse_writers_first(shared_lab):
    from oluo_lab.snapshot.objrefs import clear_self_tests

    url, options = shared_lab
    listing = make_backend(url, **options)[0].list_tree("")
    before = sorted((o.name, o.size) for o in listing)
    clear_self_tests()  # a process that has these credentials only
    hook = ReadOnlyCredentials()
    prev = backends.set_object_hook(hook)
    try:
        lab = Lab.open(url, **options)
        # the conditional-write self-test's probe, refused: nothing else was asked
        assert hook.writes == [("put_create", "selftest/PROBE"), ("delete", "selftest/PROBE")]
        hook.writes.clear()
        head = lab.head()
        assert list(lab.log()["note"]) == ["two", "one"] and len(lab.runs()) == 2
        assert set(lab.refs.branches()) == {"main", "exp"} and lab.resolve("v1").note == "one"
        assert len(lab.diff("v1", "HEAD", semantic=False).ids_added) == 30
        eng = lab.checkout("exp", progress=False)
        assert len(eng) == 150
        assert lab.verify(progress=False)
        dry = lab.gc(dry_run=True, grace_s=0, progress=False)
        assert dry.dry_run
        assert hook.writes == [], f"a read wrote: {hook.writes}"
        eng.add(_vectors(5, 7), ids=[f"x{i}" for i in range(5)])
        writers = {
            "commit": lambda: lab.commit(eng, progress=False),
            "tag": lambda: lab.tag("v2"),
            "untag": lambda: lab.untag("v1"),
            "create a branch": lambda: lab.branch("new"),
            "delete a branch": lambda: lab.delete_branch("exp"),
            "gc": lambda: lab.gc(dry_run=False, grace_s=0, progress=False),
            "repair the head": lambda: lab.repair_head("HEAD"),
            "run a sweep": lambda: lab.sweep(lambda **point: _engine(), {"M": [8]}),
        }
        for what, call in writers.items():
            with pytest.raises(ReadOnlyLab, match=f"cannot {what}: the lab {re.escape(url)}"):
                call()
        assert hook.writes == [], f"a refused writer wrote first: {hook.writes}"
    finally:
        backends.set_object_hook(prev)
        clear_self_tests()
    with pytest.raises(ReadOnlyLab, match="cannot create a lab"):
        prev = backends.set_object_hook(ReadOnlyCredentials())
        try:
            Lab(f"{url}-new", **options)
        finally:
            backends.set_object_hook(prev)
            clear_self_tests()
    after = make_backend(url, **options)[0].list_tree("")
    assert sorted((o.name, o.size) for o in after) == before
    assert Lab.open(url, **options).head().cid == head.cid
