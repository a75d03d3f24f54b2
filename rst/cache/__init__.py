"""The retrieve cache: instances from DIMSE PACS kept on disk and shared by concurrent requests.

DIMSE has no metadata or frame retrieval, so a viewer's series metadata request followed by one
request per frame would otherwise cost one C-MOVE each. :class:`CachedBackend` sits in front of
a DIMSE backend: every service that retrieves benefits without knowing. The pieces, along the
data flow: :mod:`~rst.cache.backend` (where a retrieve is served from) →
:mod:`~rst.cache.flight` (single flight) → :mod:`~rst.cache.files` (instances into and out of
files) → :mod:`~rst.cache.cache` (the store from trio; a failing cache never fails a request)
→ :mod:`~rst.cache.store` (files and the SQLite index). See ``docs/discussion/cache.md``.
"""

from rst.cache.backend import CachedBackend, archive_key, with_cache
from rst.cache.cache import Cache, open_cache
from rst.cache.store import CacheUnavailable, Entry, Store

__all__ = [
    "Cache",
    "CacheUnavailable",
    "CachedBackend",
    "Entry",
    "Store",
    "archive_key",
    "open_cache",
    "with_cache",
]
