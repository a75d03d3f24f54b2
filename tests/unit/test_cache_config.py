"""``[cache]`` and ``[[aets]] cache``: defaults, the file, the environment, refusals, and which
archives the server puts the cache in front of."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rst.cache import Cache, CachedBackend, Store, with_cache
from rst.config import AeConfig, ConfigError, load_config
from rst.services.protocols import Backend
from tests.support.scripted_backend import ScriptedBackend

NO_ENV: dict[str, str] = {}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rst.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    config = load_config(environ=NO_ENV)

    assert config.cache.path is None
    assert config.cache.max_bytes == 2 * 1024**3
    assert config.cache.ttl_seconds == 3600.0
    assert AeConfig(aet="PACS").cache is True


def test_file_sets_the_cache_and_turns_it_off_per_archive(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[cache]\npath = "/var/cache/rst"\nmax_bytes = 20_000_000_000\nttl_seconds = 600\n\n'
        '[[aets]]\naet = "FAST"\n\n[[aets]]\naet = "SLOW"\ncache = false\n',
    )

    config = load_config(path, environ=NO_ENV)

    assert (config.cache.path, config.cache.max_bytes) == ("/var/cache/rst", 20_000_000_000)
    assert config.cache.ttl_seconds == 600.0
    assert [ae.cache for ae in config.aets if isinstance(ae, AeConfig)] == [True, False]


def test_environment_sets_the_cache() -> None:
    config = load_config(
        environ={
            "RST_CACHE_PATH": "/srv/cache",
            "RST_CACHE_MAX_BYTES": "1000",
            "RST_CACHE_TTL_SECONDS": "2.5",
            "RST_AETS_PACS_CACHE": "false",
        }
    )

    assert (config.cache.path, config.cache.max_bytes, config.cache.ttl_seconds) == (
        "/srv/cache",
        1000,
        2.5,
    )
    ae = config.ae("PACS")
    assert isinstance(ae, AeConfig)
    assert ae.cache is False


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[cache]\nmax_bytes = 0\n", "cache.max_bytes"),
        ("[cache]\nmax_bytes = -5\n", "cache.max_bytes"),
        ("[cache]\nttl_seconds = 0\n", "cache.ttl_seconds"),
        ('[cache]\npath = ""\n', "cache.path"),
        ("[cache]\nsize = 5\n", "cache.size"),
        ('[[aets]]\naet = "A"\ncache = "maybe"\n', "aets.0.cache"),
        ('[[aets]]\naet = "S"\nbackend = "s3"\nbucket = "dicom"\ncache = true\n', "aets.0.cache"),
    ],
)
def test_nonsense_is_refused_naming_the_key(tmp_path: Path, toml: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"\b{key}: "):
        load_config(write(tmp_path, toml), environ=NO_ENV)


def test_unknown_cache_variable_is_refused() -> None:
    with pytest.raises(ConfigError, match="RST_CACHE_SIZE names no key of \\[cache\\]"):
        load_config(environ={"RST_CACHE_SIZE": "1"})


def test_only_dimse_archives_with_the_cache_on_are_wrapped(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            '[[aets]]\naet = "ON"\n\n[[aets]]\naet = "OFF"\ncache = false\n\n'
            '[[aets]]\naet = "S3"\nbackend = "s3"\nbucket = "dicom"\n',
        ),
        environ=NO_ENV,
    )
    backends: dict[str, Backend] = {
        name: ScriptedBackend(name=name) for name in ("ON", "OFF", "S3")
    }
    store = Store.open(tmp_path / "cache", max_bytes=1, ttl=1)
    try:
        served: dict[str, Any] = with_cache(config, backends, Cache(store))
    finally:
        store.close()

    assert list(served) == ["ON", "OFF", "S3"]
    assert isinstance(served["ON"], CachedBackend)
    assert served["ON"].inner is backends["ON"]
    assert served["ON"].archive == "ON@127.0.0.1:104"
    assert served["OFF"] is backends["OFF"]
    assert served["S3"] is backends["S3"]
    assert with_cache(config, backends, None) == backends
