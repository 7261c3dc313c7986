"""PackStore: the conformance suite on local packs, plus pack-specific behaviour."""

from __future__ import annotations

import pytest
from pack_helpers import pack_corrupt

from oluo_lab.cas import PackStore
from oluo_lab.testing.store import StoreConformance


class TestPackStore(StoreConformance):
    def make_store(self, tmp_path):
        return PackStore(tmp_path / "packs", target_pack_size=256 << 10)

    def corrupt(self, store, cid, how):
        pack_corrupt(store, cid, how)


class TestPackStoreOnObstoreMemory(StoreConformance):
    def make_store(self, tmp_path):
        return PackStore("memory:///", target_pack_size=256 << 10)

    def corrupt(self, store, cid, how):
        pack_corrupt(store, cid, how)


class TestPackStoreOnS3(StoreConformance):
    @pytest.fixture(autouse=True)
    def _server(self, s3):
        self.s3 = s3

    def make_store(self, tmp_path):
        return PackStore(self.s3.url(tmp_path.name), target_pack_size=256 << 10, **self.s3.options)

    def corrupt(self, store, cid, how):
        pack_corrupt(store, cid, how)
