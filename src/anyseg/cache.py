"""An LRU cache of image embeddings, bounded in bytes, keyed by (image content hash, model id)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

import numpy as np

from anyseg.errors import InputError
from anyseg.io.images import image_hash
from anyseg.types import Embedding


class EmbeddingCache:
    """Keeps the most recently used embeddings while their total size is at most ``max_bytes``.

    An embedding larger than the whole budget is returned but not kept. Thread-safe.
    """

    def __init__(self, max_bytes: int = 1 << 30):
        if max_bytes <= 0:
            raise InputError(f"cache size must be positive; got {max_bytes} bytes")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple[str, str], Embedding] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, image_key: str, model_id: str) -> Embedding | None:
        with self._lock:
            item = self._items.get((image_key, model_id))
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end((image_key, model_id))
            self.hits += 1
            return item

    def put(self, embedding: Embedding) -> None:
        key = (embedding.image_hash, embedding.model_id)
        size = embedding.nbytes
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if size > self.max_bytes:
                return
            self._items[key] = embedding
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes

    def get_or_embed(self, image: np.ndarray, model_id: str, embed: Callable[[np.ndarray], Embedding]) -> Embedding:
        """The cached embedding of ``image`` for ``model_id``, computing it with ``embed`` on a miss."""
        key = image_hash(image)
        hit = self.get(key, model_id)
        if hit is not None:
            return hit
        emb = embed(image)
        if emb.image_hash != key:  # adapters that leave the hash empty
            from dataclasses import replace

            emb = replace(emb, image_hash=key)
        self.put(emb)
        return emb

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
