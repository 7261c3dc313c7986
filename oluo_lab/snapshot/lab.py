"""``Lab``: the notebook workspace over one data directory, an experiment tracker.

A Lab is a data directory (refs, commit log, tags, base cache, lock) plus a book store
under ``path/cas`` (:func:`oluo_lab.cas.open_store`: a new lab gets a pack store, an
existing one keeps the store it has), or the same on an object store
(``Lab("s3://bucket/prefix")``, any URL obstore speaks): a pack store under ``cas/`` and
refs as create-only numbered objects (:class:`~oluo_lab.snapshot.objrefs.ObjectRefs`),
shared by every process that opens the URL; engines are restored into memory there
(there is no base cache to map). A **commit** is a manifest with its parent;
**branches** are named refs to commits (the default branch ``main`` is the head file of
``persist_snapshot`` / ``load_snapshot``); each commit gets a lab-wide number ``#n`` in
the commit log, beside its time and measured timings. Any engine can be committed: a
fresh build on a branch of its own, or an engine restored by :meth:`Lab.checkout` with
its true parent. The engine's real configuration is always recorded from the engine; the
user's ``params`` and ``metrics`` have namespaces of their own, and an evaluation on
held-out queries can be recorded at commit.

Snapshot layer, top. It reads and moves refs only through a
:class:`~oluo_lab.snapshot.refs.RefStore`, resolves refs with
:mod:`.catalog`, writes commits with :mod:`.commit`, builds its tables in :mod:`.runs`
and delegates ``diff``, ``verify``, ``gc`` and ``sweep`` to :mod:`.diff`,
:mod:`.verify`, :mod:`.gc` and :mod:`.sweep`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import progress_bar
from ..cas import (
    CID,
    DEFAULT_GC_GRACE_S,
    ContentError,
    PackStore,
    StoreIOError,
    open_store,
    reassemble,
)
from ..cas._backends import Missing, ObstoreBackend
from ..cas.packs import make_backend
from ..engine import DEFAULT_COMPACT_THRESHOLD, OluoEngine, PersistSnapshot
from . import refs_log
from .base_cache import BASE_NAME, base_holds
from .branches import BRANCHES_NAME, DEFAULT_BRANCH, check_branch_name, check_unique_name
from .catalog import LabView, commit_id
from .commit import CommitPlan, Written, index_digest_of, write_commit
from .diff import diff_snapshots
from .durable import data_dir_lock
from .errors import (
    CommitPruned,
    HeadMoved,
    ManifestSerde,
    NotALab,
    OluoPersistError,
    ParamConflict,
    PersistIOError,
    RefExists,
    SnapshotNotFound,
    UnsupportedVersion,
)
from .evaluation import as_spec, check_spec, evaluate_engine, truth_key_of
from .gc import gc_lab
from .head import HEAD_NAME, Head
from .history import revive_history
from .index_codec import read_index_record
from .manifest import SnapshotManifest, canonical_value, fetch_manifest, manifest_html
from .objrefs import LAB_FORMAT_KEY, LAB_FORMAT_TEXT, ObjectRefs
from .origins import origin_of, remember
from .persist import describe_metadata, ingest_metadata, restore_engine
from .refs import LocalRefs, RefStore
from .refs_log import REFS_LOG_NAME
from .reports import GcReport, ManifestDiff, VerifyReport
from .runs import (
    Books,
    branches_frame,
    compare_frame,
    evaluations_frame,
    log_frame,
    runs_frame,
    state_of,
)
from .tags import TAGS_NAME as TAGS_NAME  # the tags file's name, also importable from here
from .tags import check_tag_name
from .verify import verify_lab

__all__ = ["ENGINE_SETTINGS", "Lab", "Snapshot", "is_lab"]

Ref = int | str | CID

#: param names that name an engine setting (aliases included) -> the setting
ENGINE_SETTINGS = {
    "dim": "dim",
    "metric": "metric",
    "M": "M",
    "ef_construction": "ef_construction",
    "efConstruction": "ef_construction",
    "ef_search": "ef_search",
    "efSearch": "ef_search",
    "prune_headroom": "prune_headroom",
    "entries": "entries",
}


@dataclass(frozen=True)
class Snapshot:
    """One commit: its manifest CID and decoded manifest, plus what the commit log says
    of it (``seq``: its number ``#n``; ``branch``: the branch it was committed to;
    ``time``; ``timings`` measured at commit; ``state``: ``"live"`` or ``"pruned"``).
    Two Snapshots are equal when their CIDs and manifests are."""

    cid: CID
    manifest: SnapshotManifest
    seq: int | None = field(default=None, compare=False)
    branch: str | None = field(default=None, compare=False)
    time: str | None = field(default=None, compare=False)
    timings: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    state: str = field(default="live", compare=False)
    index_digest: str | None = field(default=None, compare=False, repr=False)
    """The content identity of the index: blake3 of its bytes (hex), whatever history
    or patching stored it (None only for an old manifest whose index record is gone)."""

    @property
    def generation(self) -> int:
        """The engine's compaction generation (engine detail: see ``seq`` for the
        commit's number)."""
        return self.manifest.compact_generation

    @property
    def id(self) -> str:
        """The commit id ``log`` shows (``short`` is its first 12 characters)."""
        return commit_id(self.cid)

    @property
    def short(self) -> str:
        return self.cid.short

    @property
    def label(self) -> str:
        """``#n`` (or the short id of a commit the log does not number)."""
        return f"#{self.seq}" if self.seq is not None else self.cid.short

    @property
    def entries(self) -> int:
        return self.manifest.entries

    @property
    def note(self) -> str:
        return self.manifest.note

    @property
    def annotations(self) -> Mapping[str, Any]:
        """Version 1 manifests' free-form annotations (``params``/``metrics`` since)."""
        return self.manifest.annotations

    @property
    def params(self) -> Mapping[str, Any]:
        return self.manifest.params

    @property
    def metrics(self) -> Mapping[str, Any]:
        return self.manifest.metrics

    @property
    def evaluation(self) -> Mapping[str, Any] | None:
        return self.manifest.evaluation

    @property
    def recall(self) -> dict[int, float]:
        """Recorded recall@k per ef_search (``{}`` without a recorded evaluation)."""
        ev = self.manifest.evaluation or {}
        return {int(ef): float(r) for ef, r in ev.get("recall", [])}

    @property
    def config(self) -> Mapping[str, Any]:
        """The engine's real configuration (metric, dim, M, ef_construction, ef_search)."""
        return self.manifest.index_config

    @property
    def parent(self) -> CID | None:
        return self.manifest.parent

    @property
    def pruned(self) -> bool:
        return self.state == "pruned"

    def __repr__(self) -> str:
        note = f", note={self.note!r}" if self.note else ""
        branch = f", branch={self.branch}" if self.branch else ""
        return (
            f"Snapshot({self.label}, commit={self.cid.short}{branch}, "
            f"generation={self.generation}, entries={self.entries}{note})"
        )

    def _repr_html_(self) -> str:
        caption = f"Snapshot {self.label} (commit {self.cid.short}, generation {self.generation})"
        return manifest_html(self.manifest, caption, self.cid)


def _index_digest(manifest: SnapshotManifest, store: Any) -> bytes:
    if manifest.index_digest is not None:
        return manifest.index_digest
    return read_index_record(manifest.index_cid, store).digest


def is_url(path_or_url: Path | str) -> bool:
    """Does this name a lab on an object store (``scheme://...``, not ``file://``)?"""
    text = str(path_or_url)
    return "://" in text and not text.startswith("file://")


def _local(path_or_url: Path | str) -> Path:
    text = str(path_or_url)
    return Path(text[len("file://") :]) if text.startswith("file://") else Path(path_or_url)


def _object_root(url: str, options: Mapping[str, Any]) -> ObstoreBackend:
    """The object store at ``url`` (obstore options, else the AWS_* environment)."""
    try:
        backend, _ = make_backend(url, **options)
    except TypeError as exc:
        raise PersistIOError(f"cannot open {url}: {exc}") from exc
    except StoreIOError as exc:
        raise PersistIOError(f"cannot open {url}", exc.cause) from exc
    assert isinstance(backend, ObstoreBackend)
    backend.name = url
    return backend


def _lab_marker(root: ObstoreBackend, url: str) -> str | None:
    try:
        return root.read(LAB_FORMAT_KEY).decode("utf-8", "replace")
    except Missing:
        return None
    except StoreIOError as exc:
        raise PersistIOError(f"cannot read {url}/{LAB_FORMAT_KEY}", exc.cause) from exc


def is_lab(path: Path | str, **options: Any) -> bool:
    """Does ``path`` hold a lab (a data directory with a store, a head, branches or a
    commit log; on an object store, the lab's marker object)? Reads only; creates
    nothing. ``options``: the object store's (endpoint, credentials, ...)."""
    if is_url(path):
        url = str(path).rstrip("/")
        return _lab_marker(_object_root(url, options), url) is not None
    path = _local(path)
    if not path.is_dir():
        return False
    return any((path / name).exists() for name in ("cas", HEAD_NAME, BRANCHES_NAME, REFS_LOG_NAME))


class Lab:
    """Commits, branches, tags and evaluations of engines in one directory or bucket.

    ``Lab(path)`` opens the lab at ``path``, creating the directory when it is missing
    (its parent must exist unless ``parents=True``); :meth:`Lab.open` opens an existing
    lab only. ``HEAD`` names the head of the Lab's current branch (``main`` until
    :meth:`checkout` of a branch name switches it).

    ``path`` may be an object-store URL (``s3://bucket/prefix``, ``gs://``, ``az://``,
    ``memory://name/prefix``; extra ``s3``): every process that opens it shares the lab.
    ``store_options`` configure the object store (``endpoint``, ``access_key_id``,
    ``secret_access_key``, ``region``, ``allow_http``, ...), else obstore reads the
    ``AWS_*`` environment variables. Commits there are lock-free (create-only numbered
    refs); a server that ignores conditional writes makes every write raise
    :class:`UnsafeObjectStore` unless ``single_writer=True``.

    Concurrent writers each use their own ``Lab`` object (one per thread, process or
    worker, as :meth:`sweep`'s tasks do): a commit's books are written in one batch of
    the Lab's store object, and a commit from another thread on the same object would
    join that batch instead of making its own books durable first.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        compact_threshold: int = DEFAULT_COMPACT_THRESHOLD,
        parents: bool = False,
        branch: str = DEFAULT_BRANCH,
        single_writer: bool = False,
        **store_options: Any,
    ) -> None:
        existing = store_options.pop("_existing", False)
        self.store_options = dict(store_options)
        if is_url(path):
            self._open_objects(str(path).rstrip("/"), single_writer, create=not existing)
        else:
            if store_options:
                raise TypeError(f"a local lab takes no store options {sorted(store_options)}")
            self._open_dir(_local(path), parents)
        self.compact_threshold = compact_threshold
        self.current_branch = check_branch_name(branch)
        self._manifests: dict[CID, SnapshotManifest] = {}
        self._books = Books(self.store)
        self._truth: dict[tuple[Any, ...], bytes] = {}

    def _open_dir(self, path: Path, parents: bool) -> None:
        self.path: Path | None = path
        self.location = str(path)
        if path.exists() and not path.is_dir():
            raise PersistIOError(f"lab path {path} exists and is not a directory")
        if not path.exists():
            if not parents and not path.parent.is_dir():
                raise PersistIOError(
                    f"cannot create lab {path}: its parent directory {path.parent} "
                    "does not exist (pass parents=True to create it too)"
                )
            try:
                path.mkdir(parents=parents, exist_ok=True)
            except OSError as exc:
                raise PersistIOError(f"cannot create lab directory {path}", exc) from exc
        self.store = open_store(path / "cas")  # as found, else a new pack store
        self.refs: RefStore = LocalRefs(path)

    def _open_objects(self, url: str, single_writer: bool, create: bool) -> None:
        self.path = None
        self.location = url
        root = _object_root(url, self.store_options)
        marker = _lab_marker(root, url)
        if marker is None and not create:
            raise NotALab(url, f"no {LAB_FORMAT_KEY} object there")
        if marker is not None and marker != LAB_FORMAT_TEXT:
            raise NotALab(url, f"{LAB_FORMAT_KEY} says {marker!r}, not {LAB_FORMAT_TEXT!r}")
        refs = ObjectRefs(root, url, single_writer=single_writer)
        if marker is None:
            try:
                if root.list(""):  # anything else there (a copied lab directory, a store)
                    raise NotALab(url, "it holds other objects; a new lab needs an empty prefix")
            except StoreIOError as exc:
                raise PersistIOError(f"cannot list {url}", exc.cause) from exc
            refs.check_writable("create a lab")
            try:
                root.put_create(LAB_FORMAT_KEY, LAB_FORMAT_TEXT.encode())
            except StoreIOError as exc:
                raise PersistIOError(f"cannot create lab {url}", exc.cause) from exc
        try:
            self.store = PackStore(root.child("cas", name=f"{url}/cas"))
        except StoreIOError as exc:
            raise PersistIOError(f"cannot open the store of {url}", exc.cause) from exc
        self.refs = refs

    @classmethod
    def open(cls, path: Path | str, **options: Any) -> Lab:
        """The existing lab at ``path``; :class:`NotALab` (creating nothing) otherwise."""
        if is_url(path):
            return cls(path, _existing=True, **options)
        local = _local(path)
        if not local.exists():
            raise NotALab(local, "no such directory")
        if not is_lab(local):
            raise NotALab(local, "no store, head, branches or commit log in it")
        return cls(local, **options)

    @property
    def name(self) -> str:
        """How reprs name the lab: its directory's name, or its URL."""
        return self.path.name if self.path is not None else self.location

    def __repr__(self) -> str:
        try:
            head = self.refs.read_ref(self.current_branch)
            view = self.view()
        except (OluoPersistError, ContentError):
            return f"Lab({self.name!r}, damaged refs: see verify())"
        n, nb = len(view.reachable()), len(view.branches)
        if n == 0:
            return f"Lab({self.name!r}, empty)"
        if head is None:
            where = f"branch {self.current_branch}: empty"
        else:
            where = f"{self.current_branch} at {view.label(head.cid)}"
        return (
            f"Lab({self.name!r}, {where}, {n} commit{'s' * (n != 1)}, "
            f"{nb} branch{'es' * (nb != 1)})"
        )

    def _repr_html_(self) -> str:
        return lab_html(self)

    # ------------------------------------------------------------------ reading
    def _manifest(self, cid: CID) -> SnapshotManifest:
        m = self._manifests.get(cid)
        if m is None:
            m = fetch_manifest(self.store, cid)
            self._manifests[cid] = m
        return m

    def view(self, *, tolerant: bool = False) -> LabView:
        """The lab's refs and commit log now. ``tolerant``: a damaged head file is left
        out instead of raised (to resolve numbers and ids when recovering)."""
        if not tolerant:
            return LabView.read(self.refs, self._manifest)
        try:
            branches = self.refs.branches()
        except (OluoPersistError, ValueError):
            branches = {}
        try:
            tags = self.refs.tags()
        except OluoPersistError:
            tags = {}
        return LabView(branches, tags, self.refs.records(), self._manifest)

    def _snap(self, view: LabView, cid: CID) -> Snapshot:
        m = view.manifest(cid)
        rec = view.numbered.get(cid)
        try:
            digest: str | None = _index_digest(m, self.store).hex()
        except (OluoPersistError, ContentError):
            digest = None
        return Snapshot(
            cid,
            m,
            seq=None if rec is None else rec.seq,
            branch=None if rec is None else rec.branch,
            time=None if rec is None else rec.time,
            timings=dict(rec.timings) if rec is not None else {},
            state=state_of(view, self.store, cid, m),
            index_digest=digest,
        )

    def head(self, branch: str | None = None) -> Snapshot | None:
        """The head commit of ``branch`` (default: the current branch), None when empty."""
        name = self.current_branch if branch is None else branch
        head = self.refs.read_ref(name)
        if head is None:
            return None
        return self._snap(self.view(), head.cid)

    def history(self, limit: int | None = None, branch: str | None = None) -> list[Snapshot]:
        """Commits from the head of ``branch`` (default: the current branch) back along
        parent links, newest first."""
        view = self.view()
        head = view.branches.get(self.current_branch if branch is None else branch)
        if head is None:
            return []
        out = []
        for cid in view.ancestry(head.cid):
            if limit is not None and len(out) >= limit:
                break
            out.append(self._snap(view, cid))
        return out

    def log(self, branch: str | None = None):
        """One row per commit, newest first (a pandas DataFrame): every commit of the
        lab, or the history of ``branch``. Columns: ``#`` (the commit's number), ``commit``
        (the id a ref may abbreviate), ``branch`` (committed to), ``tags``, ``parent``,
        ``time`` (from the commit log), ``generation`` (the engine's), ``entries``,
        ``holes`` (index positions with no entry: deleted vectors an in-place repair left
        zeroed and unlinked; None once pruned), ``bytes`` (every book the commit reaches), ``new_bytes`` (those its parent does
        not), ``state`` (``live`` or ``pruned``), ``note``."""
        return log_frame(self.view(), self.store, self._books, branch)

    def runs(self, branch: str | None = None, query: str | None = None, *, timings: bool = False):
        """The runs table: one row per commit, newest first, with the engine's
        configuration (``metric``, ``dim``, ``M``, ``ef_construction``, ``ef_search``),
        the recorded ``recall@k`` at its ef_search, ``params.*`` and ``metrics.*``
        (``annotations.*`` for commits written before params existed), bytes and state.
        ``branch``: only that branch's history; ``query``: a pandas ``DataFrame.query``
        expression (quote dotted names in backticks: ``"`params.M` >= 16"``);
        ``timings``: add the QPS and latency percentiles measured at commit (they vary
        from run to run)."""
        return runs_frame(self.view(), self.store, self._books, branch, query, timings)

    def compare(self, *refs: Ref | Snapshot):
        """Config, params, metrics and recorded recall of commits side by side (one column
        per ref), with ``Δ`` columns: each one's numeric values minus the first's."""
        if len(refs) < 2:
            raise ValueError("compare needs at least two refs")
        view = self.view()
        cids = [self._resolve_in(view, r)[0] for r in refs]
        labels: list[str] = []
        for cid in cids:
            label = view.label(cid)
            while label in labels:
                label += "'"
            labels.append(label)
        return compare_frame(view, cids, labels)

    def evaluations(self, refs: Any = None):
        """One row per (commit, ef_search) of the recorded evaluations of ``refs``
        (default: every commit that has one): ``run`` (a label), the engine config, ``k``,
        ``ef_search``, ``recall`` and the timings measured at commit (``qps``, latency
        percentiles; NaN when not measured). What ``plot_recall_qps(lab, refs)`` draws."""
        view = self.view()
        if refs is None:
            cids = [c for c in reversed(view.reachable()) if view.manifest(c).evaluation]
        else:
            if isinstance(refs, str | int | CID | Snapshot):
                refs = [refs]
            cids = [self._resolve_in(view, r)[0] for r in refs]

        def label(cid: CID) -> str:
            m = view.manifest(cid)
            params = ", ".join(f"{k}={m.params[k]}" for k in sorted(m.params))
            name = view.label(cid)
            return f"{name} {params}" if params else f"{name} {m.note}".strip()

        return evaluations_frame(view, cids, label)

    def branches(self):
        """One row per branch (``main`` first): its head commit and whether it is the
        current branch (what ``HEAD`` names)."""
        return branches_frame(self.view(), self.current_branch)

    def _resolve_in(self, view: LabView, ref: Ref | Snapshot) -> tuple[CID, str | None]:
        if isinstance(ref, Snapshot):
            return ref.cid, None
        return view.resolve(ref, self.current_branch)

    def resolve(self, ref: Ref | Snapshot) -> Snapshot:
        """The commit ``ref`` names (see the ref grammar in docs/FORMAT.md §3.8):
        ``HEAD``, ``HEAD~2``, a branch (``m32~1``), a tag, ``#7`` (or the int 7), a CID,
        or a unique prefix of the commit id ``log`` shows. :class:`UnknownRef` and
        :class:`AmbiguousRef` list the candidates. Numbers, ids and tags still resolve
        when the head file is damaged (to recover with :meth:`checkout`)."""
        if isinstance(ref, Snapshot):
            return ref
        view, (cid, _) = self._lookup(ref)
        return self._snap(view, cid)

    def _lookup(self, ref: Ref) -> tuple[LabView, tuple[CID, str | None]]:
        """Resolve ``ref``; with a damaged head file, numbers, ids, tags and other branches
        still resolve (the head's own error is raised for what needs the head)."""
        try:
            view = self.view()
        except (ManifestSerde, UnsupportedVersion, PersistIOError) as exc:
            view = self.view(tolerant=True)
            try:
                return view, self._resolve_in(view, ref)
            except SnapshotNotFound:
                raise exc from None
        return view, self._resolve_in(view, ref)

    def _live(self, snap: Snapshot) -> Snapshot:
        """``snap``, or :class:`CommitPruned` when gc retired its payloads."""
        if snap.state == "pruned":
            when = self.view(tolerant=True).retired.get(snap.cid)
            raise CommitPruned(snap.cid.hex, snap.seq, when)
        return snap

    # ------------------------------------------------------------------ checkout
    def checkout(self, ref: Ref | Snapshot = "HEAD", *, progress: bool = True) -> OluoEngine:
        """An engine holding exactly the entries of commit ``ref``.

        The engine remembers the commit it came from: committing it makes a commit whose
        parent is that one. Checking out a branch by name makes it the Lab's current
        branch (``HEAD``) and the branch the engine commits to by default. A commit
        whose payloads gc retired raises :class:`CommitPruned`.

        ``progress``: a ``tqdm.auto`` bar over the payload bytes (shown after half a
        second); reading, decoding and rebuilding the engine are one step, so it
        reports elapsed time while they run and the byte rate when done.
        """
        if isinstance(ref, Snapshot):
            view, (cid, branch) = self.view(tolerant=True), (ref.cid, None)
        else:
            view, (cid, branch) = self._lookup(ref)
        snap = self._live(self._snap(view, cid))
        size = snap.manifest.index_size + snap.manifest.metadata_size
        desc = f"checkout {snap.label}"
        with progress_bar(progress, total=size, desc=desc, unit="B", unit_scale=True) as bar:
            engine, _ = restore_engine(self.store, snap.manifest, self.compact_threshold)
            bar.update(size)
        if branch is not None:
            self.current_branch = branch
        remember(engine, self.location, snap.cid, branch)
        return engine

    # ------------------------------------------------------------------ commit
    def commit(
        self,
        engine: OluoEngine,
        note: str = "",
        *,
        branch: str | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        evaluate: Any = None,
        progress: bool = True,
        retry: bool | int = False,
        **more_params: Any,
    ) -> Snapshot:
        """Commit the engine's current state to ``branch`` and return the commit.

        ``branch`` defaults to the branch the engine was checked out from (or last
        committed to), else the current branch. The parent is the commit the engine
        came from (none for an engine built from scratch); the branch must not lose
        commits: its head must be that parent or one of its ancestors, or the branch
        must be new. Otherwise :class:`HeadMoved` says which call to make instead, and
        nothing changes (the engine is not compacted).

        ``params`` / ``metrics`` (keyword arguments are params too) are stored in their
        own namespaces; numpy scalars, 0-d arrays and tuples are stored canonically. A
        param that names an engine setting (``M``, ``ef_search``, ...) with another
        value than the engine's is refused (:class:`ParamConflict`): the engine's real
        configuration is always recorded from the engine. ``evaluate``: held-out
        queries (an :class:`EvalSpec`, a Dataset or an array) to record recall@k on.

        An engine whose state did not change since the commit it came from is not
        compacted: the commit keeps its engine generation, its index record and its
        ``index_digest``; with no note, params, metrics or evaluation either, the head
        is returned as it is. Automatic compactions queued on the engine are dropped:
        a commit records exactly the engine's current state.

        On an object store, where several processes commit without a lock, another
        writer may move the branch between the check above and the commit point: the
        commit then raises :class:`HeadMoved` naming the winner's commit (``.found``;
        ``.raced`` is true), its books stored but on no branch. ``retry`` (True: up to
        8 times, or a number) commits it on top of the winner instead, as long as the
        engine still descends from the new head (the same check as above, which
        otherwise refuses with its usual message). A local lab holds its lock, so no
        commit there loses a race.

        ``progress``: a ``tqdm.auto`` bar (shown after half a second) over the steps.
        """
        self.refs.check_writable("commit")
        with progress_bar(progress, total=5, desc="commit", unit="step") as bar:
            return self._commit(
                engine, note, branch, params, metrics, evaluate, more_params, bar, retry
            )

    def _commit(
        self,
        engine: OluoEngine,
        note: str,
        branch: str | None,
        params: Mapping[str, Any] | None,
        metrics: Mapping[str, Any] | None,
        evaluate: Any,
        more_params: Mapping[str, Any],
        bar: Any,
        retry: bool | int = False,
    ) -> Snapshot:
        # ---- everything that can refuse, before the engine changes
        if not isinstance(engine, OluoEngine):
            raise TypeError(f"commit takes an OluoEngine, not {type(engine).__name__}")
        if not isinstance(note, str):
            raise ManifestSerde(f"manifest note must be str, got {type(note).__name__}")
        retries = _retries(retry)
        user_params = _user_params(params, more_params)
        user_metrics = canonical_value(dict(metrics or {}), "metrics")
        _check_against_engine(user_params, engine)
        spec = as_spec(evaluate)
        queries = check_spec(engine, spec) if spec is not None else None
        origin = origin_of(engine, self.location)
        target = (
            branch
            if branch is not None
            else (origin.branch if origin and origin.branch else self.current_branch)
        )
        check_branch_name(target)
        view = self.view()
        found = view.branches.get(target)
        if found is None:
            _check_not_a_tag(target, view.tags)
            check_unique_name("branch", target, self._taken_names())
        parent_cid = None if origin is None else origin.cid
        # a branch head that is a child of this engine's commit at the engine's generation
        # may be this very commit, landed by an earlier call that failed after its commit
        # point (an fsync error): the retry is then a no-op. Decided once its CID is known.
        deferred = (
            found is not None
            and parent_cid is not None
            and found.generation == engine.generation
            and view.manifest(found.cid).parent == parent_cid
        )
        if not deferred:
            self._check_descent(view, target, found, parent_cid, engine)
        parent = None if parent_cid is None else view.manifest(parent_cid)
        # ---- the engine's current state (a compaction only when it has pending changes)
        payload, unchanged = self._payload(engine, parent)
        bar.update(1)

        def check_head(now: Head | None, new: CID) -> CID | None:
            """Under the lock: the head to compare-and-set against, or a refusal."""
            if now is None:
                _check_not_a_tag(target, self.refs.tags())
            if deferred or (None if now is None else now.cid) != (
                None if found is None else found.cid
            ):
                # the branch moved since we looked: fine while it still does not lose commits
                self._check_descent(self.view(), target, now, parent_cid, engine)
            return None if now is None else now.cid

        if unchanged and not (note or user_params or user_metrics or spec is not None):
            assert parent is not None and parent_cid is not None
            # nothing to record: the branch moves to the commit the engine came from (a
            # new branch there, or a fast-forward), checked again under the lock
            with self.refs.locked():
                now = self.refs.read_ref(target)
                if now is None or now.cid != parent_cid:
                    old = check_head(now, parent_cid)
                    new = Head(parent_cid, parent.compact_generation)
                    self._move_ref(
                        target, old, new, refs_log.branch_record(target, parent_cid, old)
                    )
            return self._landed(engine, target, parent_cid)
        evaluation = None
        if spec is not None:
            assert queries is not None
            bar.set_description("commit: evaluate", refresh=False)
            evaluation = evaluate_engine(engine, spec, queries, self._known_truth)
        index_config, entries = describe_metadata(payload.metadata_bytes)
        digest = index_digest_of(payload.index_bytes)
        live_parent = parent is not None and parent_cid not in view.retired
        plan = CommitPlan(
            branch=target,
            parent_cid=parent_cid,
            payload=payload,
            digest=digest,
            index_cid=(
                parent.index_cid
                if live_parent and _same_index(parent, payload, digest, self.store)
                else None
            ),
            metadata_cid=parent.metadata_cid if live_parent and unchanged else None,
            index_parent=parent.index_cid if parent is not None else None,
            note=note,
            params=user_params,
            metrics=user_metrics,
            evaluation=evaluation,
        )

        bar.set_description(f"commit to {target}", refresh=False)
        written = write_commit(
            self.refs,
            self.store,
            plan,
            index_config,
            entries,
            check_head,
            bar,
            data_dir=self.path,
            retries=retries,
        )
        # the commit has landed: what follows reads or maps, and a failure there must not
        # make the caller think it did not (a retry would then commit it a second time)
        if target == DEFAULT_BRANCH and self.path is not None:
            with (
                contextlib.suppress(OluoPersistError),
                data_dir_lock(self.path),  # another process may have replaced the base since
            ):
                if base_holds(self.path / BASE_NAME, payload.index_bytes):
                    engine.compact_complete(str(self.path / BASE_NAME), payload.generation)
        if evaluation is not None:
            key = truth_key_of(evaluation.record)
            if key is not None:
                self._truth[key] = evaluation.blobs[1]
        return self._landed(engine, target, written.cid, written)

    def _move_ref(
        self, branch: str, old: CID | None, new: Head | None, record: dict[str, Any]
    ) -> None:
        """Move (``new`` None: delete) a branch and record it in the commit log, in the
        refs store's order (hold ``refs.locked()``); on an object store the books the
        commit reaches are first stored again if a gc tombstoned them."""
        self.refs.check_writable()
        after = self.refs.records_after_move
        if after and new is not None:
            revive_history(self.store, new.cid, set(self.view(tolerant=True).retired))
        if not after:
            self.refs.log_event(record)
        if new is None:
            assert old is not None
            self.refs.delete_branch(branch, old)
        else:
            self.refs.compare_and_set(branch, old, new)
        if after:
            self.refs.log_event(record)

    def _landed(
        self, engine: OluoEngine, branch: str, cid: CID, written: Written | None = None
    ) -> Snapshot:
        remember(engine, self.location, cid, branch)
        try:
            return self._snap(self.view(), cid)
        except (OluoPersistError, ContentError):
            if written is None:
                raise
            # the commit landed but the log or the store cannot be read back now: what
            # this call wrote is known without reading it
            return Snapshot(
                cid,
                written.manifest,
                seq=written.seq,
                branch=branch,
                index_digest=None
                if written.manifest.index_digest is None
                else written.manifest.index_digest.hex(),
            )

    def _payload(
        self, engine: OluoEngine, parent: SnapshotManifest | None
    ) -> tuple[PersistSnapshot, bool]:
        """The engine's current state as payloads, and whether it is exactly the
        parent's. Compacts only when the engine holds changes not in its base."""
        snap = engine.current_snapshot()
        if snap is not None and parent is not None and snap.generation == parent.compact_generation:
            if _same_metadata(parent, snap):
                engine.take_snapshots()
                return snap, True
            snap = None  # same generation, other state (ids added and deleted again)
            forced = engine.compact(force=True)
            assert forced is not None
            snap = forced
        if snap is None:
            snap = engine.compact() or engine.compact(force=True)
            assert snap is not None
        engine.take_snapshots()  # superseded by the state committed now
        return snap, False

    def _check_descent(
        self,
        view: LabView,
        branch: str,
        found: Head | None,
        parent: CID | None,
        engine: OluoEngine,
    ) -> None:
        """Refuse a commit that would make ``branch`` lose commits (see :meth:`commit`)."""
        if found is None:
            return
        if parent is not None and view.is_ancestor(found.cid, parent):
            return
        head = f"{view.label(found.cid)} ({found.cid.short})"
        new = "lab.commit(engine, branch='NEW-NAME')"
        if parent is None:
            message = (
                f"branch {branch!r} already has commits (head {head}) and this engine does not "
                "descend from them: it was not checked out from this lab (a fresh build, or an "
                f"engine loaded elsewhere). Commit it on a branch of its own: {new}"
            )
        elif view.is_ancestor(parent, found.cid):
            message = (
                f"branch {branch!r} moved on since this engine was checked out from "
                f"{view.label(parent)}: its head is now {head}, and committing would drop "
                f"it. Check the branch out again (lab.checkout({branch!r})) and redo the "
                f"change, or commit on a new branch: {new}"
            )
        else:
            rec = view.numbered.get(parent)
            own = rec.branch if rec is not None else None
            hint = f"lab.commit(engine, branch={own!r}) or " if own and own != branch else ""
            message = (
                f"this engine descends from {view.label(parent)} ({parent.short}), which is not "
                f"in the history of branch {branch!r} (head {head}). Commit it with {hint}{new}"
            )
        raise HeadMoved(
            branch,
            found.cid,
            parent,
            message,
            current=found.generation,
            attempted=engine.generation,
        )

    def _known_truth(self, key: Mapping[str, Any]) -> bytes | None:
        """A ground-truth blob computed before for ``key`` (by this Lab object, or recorded
        by any commit of the lab and still in the store)."""
        wanted = truth_key_of(key)
        if wanted in self._truth:
            return self._truth[wanted]
        view = self.view()
        for cid in view.reachable():
            ev = view.manifest(cid).evaluation
            if ev and truth_key_of(ev) == wanted:
                try:
                    blob = reassemble(CID.from_bytes(ev["truth"]), self.store)
                except (ContentError, ValueError):
                    continue
                self._truth[wanted] = blob
                return blob
        return None

    # ------------------------------------------------------------------ branches
    def branch(self, name: str, ref: Ref | Snapshot = "HEAD", *, force: bool = False) -> Snapshot:
        """Create branch ``name`` at commit ``ref`` (no new commit). An existing branch
        is moved only with ``force`` (:class:`RefExists` says so otherwise); a commit
        whose payloads gc retired cannot be a branch head (:class:`CommitPruned`)."""
        check_branch_name(name)
        self.refs.check_writable("create a branch")
        snap = self._live(self.resolve(ref))
        with self.refs.locked():
            if name in self.refs.tags():
                raise RefExists(name, f"{name!r} is a tag; a branch needs another name")
            current = self.refs.read_ref(name)
            if current is None:
                check_unique_name("branch", name, self._taken_names())
            if current is not None and current.cid == snap.cid:
                return snap
            if current is not None and not force:
                raise RefExists(
                    name,
                    f"branch {name!r} already exists (head {current.cid.short}); pass "
                    "force=True (--force) to move it",
                )
            old = None if current is None else current.cid
            record = refs_log.branch_record(name, snap.cid, old)
            self._move_ref(name, old, Head(snap.cid, snap.generation), record)
        return snap

    def delete_branch(self, name: str) -> None:
        """Delete branch ``name`` (not ``main``); its commits stay while another branch or
        tag reaches them (gc collects the rest). KeyError when there is no such branch."""
        if name == DEFAULT_BRANCH:
            raise ValueError(f"the default branch {DEFAULT_BRANCH!r} cannot be deleted")
        self.refs.check_writable("delete a branch")
        with self.refs.locked():
            current = self.refs.read_ref(name)
            if current is None:
                raise KeyError(f"no branch named {name!r}")
            self._move_ref(name, current.cid, None, refs_log.branch_record(name, None, current.cid))
        if self.current_branch == name:
            self.current_branch = DEFAULT_BRANCH

    # ------------------------------------------------------------------ sweeps
    def sweep(
        self,
        build: Callable[..., OluoEngine],
        grid: Mapping[str, Any] | list[Mapping[str, Any]],
        evaluate: Any = None,
        executor: Any = None,
        *,
        params: Mapping[str, Any] | None = None,
        prefix: str = "sweep",
        note: str = "",
        progress: bool = True,
        threads: int | None = None,
    ):
        """One commit per grid point, each on its own branch named from its params
        (``<prefix>/M=16,ef_construction=64``); returns the sweep's rows of the runs
        table, in grid order, with a ``sweep`` column (``committed`` or ``skipped``).

        ``build(**point)`` returns a new engine; ``grid``: a mapping of param name to its
        values (every combination, in order) or a list of points. ``evaluate``: held-out
        queries recorded with each commit (stored once, passed to the tasks by CID).
        ``params``: fixed params added to every point (say what data was used: a point is
        skipped when its branch's head already has the same params and an evaluation on
        the same queries with the same k and ef_search values, so re-running a sweep only
        builds what is missing). ``executor``: any
        ``concurrent.futures.Executor``-like object (``submit`` returning futures with
        ``result()``), a ``dask.distributed.Client`` included (extra ``dask``); the tasks
        it runs are picklable (the lab's path or URL and store options, the point, CIDs),
        so ``build`` must be picklable for process or cluster executors, and every
        worker must reach the lab (a shared disk, or the object store). ``threads``:
        faiss threads each task builds and evaluates with (default: 1 when an executor
        runs the tasks side by side, else the process's own setting).
        """
        from .sweep import run_sweep

        self.refs.check_writable("run a sweep")
        if threads is None and executor is not None:
            threads = 1
        return run_sweep(
            self, build, grid, evaluate, executor, params, prefix, note, progress, threads
        )

    # ------------------------------------------------------------------ repair
    def repair_head(self, ref: Ref | Snapshot | None = None) -> Snapshot:
        """Point a damaged (or lost) head file of ``main`` at a known-good commit.

        ``ref`` defaults to the newest commit of ``main`` in the refs log whose manifest
        and payloads load. The head otherwise never moves backwards; this is the
        explicit way to recover. The move is recorded in the refs log.
        """
        self.refs.check_writable("repair the head")
        if ref is None:
            snap = self._newest_loadable()
        else:
            snap = self.resolve(ref)
            restore_engine(self.store, snap.manifest, self.compact_threshold)
        with self.refs.locked():
            self.refs.check_writable()
            record = refs_log.head_move_record("repair", snap.cid, snap.generation, snap.parent)
            if self.refs.records_after_move:
                revive_history(self.store, snap.cid, set(self.view(tolerant=True).retired))
            else:
                self.refs.log_event(record)
            self.refs.repair_ref(DEFAULT_BRANCH, Head(snap.cid, snap.generation))
            if self.refs.records_after_move:
                self.refs.log_event(record)
        return snap

    def _newest_loadable(self) -> Snapshot:
        moves = refs_log.main_moves(self.refs.records())
        if not moves:
            raise SnapshotNotFound("HEAD", "the refs log records no commit of main to recover")
        for _, cid in reversed(moves):
            try:
                snap = self.resolve(cid)
                restore_engine(self.store, snap.manifest, self.compact_threshold)
                return snap
            except (OluoPersistError, ContentError):
                continue
        raise SnapshotNotFound("HEAD", "no commit of main in the refs log loads")

    def _taken_names(self) -> dict[str, str]:
        """Every branch and tag name -> ``"branch"`` or ``"tag"``."""
        taken = {name: "tag" for name in self.refs.tags()}
        taken.update((name, "branch") for name in self.refs.branches())
        return taken

    # ------------------------------------------------------------------ tags
    def tags(self) -> dict[str, CID]:
        """Named checkpoints (tags double as gc pins): name -> manifest CID."""
        return self.refs.tags()

    def tag(self, name: str, ref: Ref | Snapshot = "HEAD", *, force: bool = False) -> Snapshot:
        """Name a commit (a checkpoint gc always keeps); ``force`` moves an existing tag."""
        check_tag_name(name)
        self.refs.check_writable("tag")
        snap = self.resolve(ref)
        with self.refs.locked():
            if name in self.refs.branches():
                raise RefExists(name, f"{name!r} is a branch; a tag needs another name")
            tags = self.refs.tags()
            if name not in tags:
                check_unique_name("tag", name, self._taken_names())
            if name in tags and tags[name] != snap.cid and not force:
                raise RefExists(
                    name,
                    f"tag {name!r} already names {tags[name].short}; pass force=True "
                    "(--force) to move it",
                )
            self.refs.check_writable()
            if self.refs.records_after_move:
                if tags.get(name) == snap.cid:
                    return snap
                revive_history(self.store, snap.cid, set(self.view(tolerant=True).retired))
            self.refs.set_tag(name, snap.cid)
        return snap

    def untag(self, name: str) -> None:
        """Remove a tag (KeyError naming it when absent)."""
        self.refs.check_writable("untag")
        with self.refs.locked():
            self.refs.check_writable()
            self.refs.delete_tag(name)

    pin = tag
    unpin = untag

    # ------------------------------------------------------------------ inspection
    def diff(
        self,
        a: Ref | Snapshot,
        b: Ref | Snapshot = "HEAD",
        *,
        queries: Any = None,
        k: int | None = None,
        semantic: bool = True,
    ) -> ManifestDiff:
        """What changed from commit ``a`` to ``b``: manifest fields, books and bytes,
        entries (ids added, removed, metadata or vector changed) and, with ``semantic``,
        the answers on a fixed query set: ``queries`` if given, else the held-out queries
        recorded with ``a``'s (or ``b``'s) evaluation, else (said plainly in the result)
        a sample of ``a``'s own vectors. Recall@k of each side is against its own exact
        answers; ``k`` defaults to the recorded evaluation's k, else 10."""
        if k is not None and (
            not isinstance(k, int | np.integer) or isinstance(k, bool) or int(k) < 1
        ):
            raise ValueError(f"diff k must be a positive int or None, got {k!r}")
        sa = self._live(self.resolve(a))
        sb = self._live(self.resolve(b))
        return diff_snapshots(self, sa, sb, queries, k, semantic)

    def verify(self, sample: int = 32, *, progress: bool = True) -> VerifyReport:
        """Check everything reachable from every branch and tag (like ``restic check``);
        truthy when clean. ``progress``: a ``tqdm.auto`` bar of the bytes re-hashed."""
        with progress_bar(progress, desc="verify", unit="B", unit_scale=True) as bar:
            return verify_lab(self, sample, bar)

    def gc(
        self,
        dry_run: bool = True,
        *,
        grace_s: float = DEFAULT_GC_GRACE_S,
        keep_last: int | None = None,
        progress: bool = True,
    ) -> GcReport:
        """Delete unreachable books older than ``grace_s`` (only reports when ``dry_run``).
        ``keep_last``: keep the payloads of only the newest N commits of each branch
        (older ones are pruned: their manifests stay in the log).

        ``progress``: a ``tqdm.auto`` bar counting the books swept and deleted. A dry run
        only reads (it works on a lab this process cannot write)."""
        if not dry_run:
            self.refs.check_writable("gc")
        with progress_bar(progress, desc="gc", unit="book") as bar:
            return gc_lab(self, dry_run, grace_s, keep_last, bar)


def _retries(retry: bool | int) -> int:
    """How many times a commit that lost a race is tried again (``retry`` of commit)."""
    if isinstance(retry, bool):
        return 8 if retry else 0
    if not isinstance(retry, int) or retry < 0:
        raise ValueError(f"retry is a bool or a count >= 0, got {retry!r}")
    return retry


def _user_params(params: Mapping[str, Any] | None, more: Mapping[str, Any]) -> dict[str, Any]:
    if params is not None and not isinstance(params, Mapping):
        raise ManifestSerde(f"params must be a mapping, got {type(params).__name__}")
    merged = dict(params or {})
    clash = sorted(set(merged) & set(more))
    if clash:
        raise ValueError(f"params {clash} given both in params= and as keyword arguments")
    merged.update(more)
    return canonical_value(merged, "params")


def _check_not_a_tag(branch: str, tags: Mapping[str, CID]) -> None:
    """:class:`RefExists` when a new branch would take a tag's name (a ref names one or
    the other, as :meth:`Lab.branch` and :meth:`Lab.tag` keep it)."""
    if branch in tags:
        raise RefExists(
            branch,
            f"{branch!r} is a tag; commit to a branch of another name "
            "(lab.commit(engine, branch='NEW-NAME'))",
        )


def _check_against_engine(params: Mapping[str, Any], engine: OluoEngine) -> None:
    """:class:`ParamConflict` for a param naming an engine setting with another value."""
    actual = {
        "dim": engine.dim,
        "metric": engine.metric,
        "M": engine.config.M,
        "ef_construction": engine.config.ef_construction,
        "ef_search": engine.config.ef_search,
        "prune_headroom": engine.config.prune_headroom,
        "entries": len(engine),
    }
    for name, value in params.items():
        setting = ENGINE_SETTINGS.get(name)
        if setting is None:
            continue
        real = actual[setting]
        if value != real or isinstance(value, bool) != isinstance(real, bool):
            raise ParamConflict(name, value, real, setting)


def _same_metadata(parent: SnapshotManifest, snap: PersistSnapshot) -> bool:
    """Do the parent's metadata payload and ``snap``'s have the same bytes? (Compared
    by the DAG CID they ingest to, so a parent whose payloads gc retired works too.)"""
    from ..cas import MemoryStore

    if parent.metadata_size != len(snap.metadata_bytes):
        return False
    return ingest_metadata(snap.metadata_bytes, MemoryStore()) == parent.metadata_cid


def _same_index(
    parent: SnapshotManifest, payload: PersistSnapshot, digest: bytes, store: Any
) -> bool:
    """Does the parent's index hold exactly the payload's index bytes (by digest)?"""
    if parent.index_size != len(payload.index_bytes):
        return False
    try:
        return _index_digest(parent, store) == digest
    except (OluoPersistError, ContentError):
        return False


def lab_html(lab: Lab, rows_shown: int = 20) -> str:
    """The Lab's HTML repr: one row per commit (newest first) with a stacked SVG bar of
    the bytes it shares with its parent and the bytes it added, on one common scale.
    The newest ``rows_shown`` commits are in the open table, the rest in ``<details>``."""
    from .._html import COLORS, Raw, details, escape, fmt_bytes, shortened_cell, svg_bar, table

    log = lab.log()
    view = lab.view()
    head = view.branches.get(lab.current_branch)
    if log.empty:
        return Raw(
            f"<p>Lab {escape(repr(lab.name))}: empty, no commit yet "
            "(<code>lab.commit(engine)</code> makes the first).</p>"
        )
    at = "no commit yet" if head is None else f"at {view.label(head.cid)}"
    n, nb = len(log), len(view.branches)
    caption = (
        f"Lab {lab.name!r}: {n} commit{'s' * (n != 1)} on {nb} "
        f"branch{'es' * (nb != 1)}, HEAD = {lab.current_branch} {at}"
    )
    scale = max(int(log["bytes"].max()), 1)
    header = [
        "#",
        "commit",
        "branch",
        "generation",
        "entries",
        "holes",
        "bytes",
        "new bytes",
        "shared | new",
        "state",
        "note",
        "tags",
    ]
    rows = []
    import pandas as pd

    for rec in log.to_dict(orient="records"):
        shared = int(rec["bytes"]) - int(rec["new_bytes"])
        bar = svg_bar(
            [("shared", shared, COLORS["shared"]), ("new", int(rec["new_bytes"]), COLORS["new"])],
            width=160,
            total=scale,
            fmt=lambda v: fmt_bytes(int(v)),
        )
        rows.append(
            [
                "" if pd.isna(rec["#"]) else f"#{rec['#']}",
                Raw(f"<code>{rec['commit']}</code>"),
                rec["branch"] or "",
                rec["generation"],
                rec["entries"],
                "—" if pd.isna(rec["holes"]) else int(rec["holes"]),
                fmt_bytes(int(rec["bytes"])),
                fmt_bytes(int(rec["new_bytes"])),
                bar,
                rec["state"],
                shortened_cell(rec["note"]),
                shortened_cell(rec["tags"] or ""),
            ]
        )
    out = table(caption, header, rows[:rows_shown])
    if len(rows) > rows_shown:
        out += details(
            f"{len(rows) - rows_shown} older commits", table(None, header, rows[rows_shown:])
        )
    return Raw(out)
