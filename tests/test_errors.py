"""One exception root: every exception class the package defines derives from OluoError,
the tree drawn in oluo_lab.errors names each of them, and the engine's error action is
not mistaken for an exception."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import numpy as np
import pytest

import oluo_lab as ol
from oluo_lab import errors
from oluo_lab.cas import CID, MemoryStore
from oluo_lab.engine import EngineErrorBase, InvalidK, UnknownId
from oluo_lab.snapshot.errors import IndexCodecError, SnapshotNotFound, UnsupportedVersion
from oluo_lab.snapshot.head import HEAD_VERSION, read_head
from oluo_lab.snapshot.manifest import MANIFEST_VERSION, SnapshotManifest

# modules that need an optional extra or import pytest are still walked when importable
_SKIP_MISSING = ("h5py", "pytest", "ipywidgets", "matplotlib", "nbformat", "nbclient")


def _modules():
    for info in pkgutil.walk_packages(ol.__path__, prefix="oluo_lab."):
        try:
            yield importlib.import_module(info.name)
        except ImportError as exc:  # an optional dependency this environment lacks
            if exc.name and exc.name.split(".")[0] in _SKIP_MISSING:
                continue
            raise


def _is_exception(obj) -> bool:
    return inspect.isclass(obj) and issubclass(obj, BaseException)


def _package_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in the package, by its dotted name."""
    return {
        f"{module.__name__}.{name}": obj
        for module in [ol, *_modules()]
        for name, obj in vars(module).items()
        if _is_exception(obj) and obj.__module__ == module.__name__
    }


def _public_exceptions() -> dict[str, type[BaseException]]:
    """The exception classes a public module (no ``_`` in its path) exports in ``__all__``."""
    found = {}
    for module in [ol, *_modules()]:
        if any(part.startswith("_") for part in module.__name__.split(".")):
            continue
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name, None)
            if _is_exception(obj):
                found[obj.__name__] = obj
    return found


def test_every_exception_the_package_defines_derives_from_oluo_error():
    found = _package_exceptions()
    assert len(found) >= 30  # the walk reached every layer (cas, engine, snapshot, ...)
    strays = sorted(name for name, cls in found.items() if not issubclass(cls, ol.OluoError))
    assert strays == []


def _tree_rows() -> list[tuple[int, str]]:
    """(depth, class name) of every row of the tree drawn in oluo_lab.errors."""
    block = errors.__doc__.split("::", 1)[1].split("\n\n", 2)[1]
    rows = []
    for line in block.splitlines():
        body = line.lstrip(" │├└─")
        rows.append((len(line) - len(body), body.split()[0]))
    return rows


def test_the_hierarchy_tree_names_every_public_exception_under_its_real_parent():
    rows = _tree_rows()
    by_name = _public_exceptions()
    public = set(by_name)
    assert public - {n for _, n in rows} == set(), "missing from the tree in oluo_lab/errors.py"
    assert {n for _, n in rows} - public == set(), "the tree names classes that do not exist"
    parents: list[tuple[int, str]] = []
    for depth, name in rows:
        while parents and parents[-1][0] >= depth:
            parents.pop()
        if parents:
            assert by_name[parents[-1][1]] in by_name[name].__bases__, (name, parents[-1][1])
        parents.append((depth, name))


def test_builtin_bases_are_kept():
    from oluo_lab.bench import MissingAnswersError
    from oluo_lab.cas import MalformedCID
    from oluo_lab.report import ReportError

    assert issubclass(MalformedCID, ValueError)
    assert issubclass(UnknownId, KeyError)
    assert issubclass(InvalidK, ValueError)
    assert issubclass(ReportError, RuntimeError)
    assert issubclass(MissingAnswersError, ValueError)
    with pytest.raises(ValueError):
        CID.parse("not a cid")


def test_engine_error_is_an_action_and_the_exception_root_is_exported():
    assert ol.OluoEngineError is EngineErrorBase
    assert issubclass(ol.OluoEngineError, ol.OluoError)
    assert not issubclass(ol.EngineError, BaseException)
    assert "not an exception" in " ".join(ol.EngineError.__doc__.split())
    eng = ol.OluoEngine(4, "l2")
    eng.add(np.eye(4, dtype=np.float32))
    [action] = eng.handle(ol.Search(3, np.ones((1, 4), np.float32), k=-1))
    assert isinstance(action, ol.EngineError) and isinstance(action.error, ol.OluoEngineError)
    with pytest.raises(ol.OluoError):  # the convenience layer raises the same error
        eng.search(np.ones((1, 4), np.float32), k=-1)


def test_a_missing_book_and_a_bad_manifest_are_caught_by_the_root():
    with pytest.raises(ol.OluoError) as ei:
        MemoryStore().get(CID.for_book(b"never stored"))
    assert ei.value.cid == CID.for_book(b"never stored")
    with pytest.raises(ol.OluoError):
        SnapshotManifest.from_bytes(b"\xa0")


def test_unsupported_version_names_the_versions_this_build_reads(tmp_path):
    (tmp_path / "oluo_head.json").write_text('{"generation":1,"head":"00","version":9}\n')
    with pytest.raises(UnsupportedVersion) as ei:
        read_head(tmp_path)
    assert ei.value.version == 9
    assert f"this build reads version {HEAD_VERSION}" in str(ei.value)
    e = UnsupportedVersion(7, "manifest", (MANIFEST_VERSION,))
    assert str(e) == f"unsupported manifest version 7 (this build reads version {MANIFEST_VERSION})"
    assert "versions 1, 2" in str(UnsupportedVersion(3, "metadata", (1, 2)))


def test_cid_attributes_have_one_type_per_kind_of_name():
    cid = MemoryStore().put(b"x")
    e = IndexCodecError("truncated", cid)
    assert e.cid == cid and cid.hex in str(e)
    assert IndexCodecError("no record yet").cid is None
    # SnapshotNotFound names what named the snapshot: hex text of a manifest, or a ref
    assert SnapshotNotFound(cid.hex).cid == cid.hex
    assert SnapshotNotFound("HEAD", "the lab is empty").cid == "HEAD"
