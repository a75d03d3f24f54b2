"""rst.config: defaults, the TOML file, ``RST_*`` overrides and errors that name the key.

Every test passes ``environ`` explicitly, so the real environment never leaks in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rst.config import (
    DEFAULT_TRANSFER_SYNTAXES,
    AeConfig,
    Config,
    ConfigError,
    S3AeConfig,
    load_config,
)

NO_ENV: dict[str, str] = {}


def dimse(ae: AeConfig | S3AeConfig | None) -> AeConfig:
    """The archive as a DIMSE one (what these tests configure)."""
    assert isinstance(ae, AeConfig)
    return ae


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rst.toml"
    path.write_text(text, encoding="utf-8")
    return path


# -- defaults --------------------------------------------------------------------------------


def test_defaults_without_file_or_environment() -> None:
    config = load_config(environ=NO_ENV)

    assert config.http.host == "127.0.0.1"
    assert config.http.port == 8080
    assert config.http.base_url is None
    assert config.http.max_stow_bytes == 4 * 1024**3
    assert config.http.graceful_timeout == 10.0
    assert config.http.cors_origins == ()
    assert config.dimse.aet == "RST"
    assert config.dimse.port == 11112
    assert config.dimse.max_pdu == 131072
    assert config.dimse.stall_timeout == 4.0
    assert config.dimse.spool_dir is None
    assert config.dimse.spool_max_bytes == 2 * 1024**3
    assert config.dimse.channel_size == 4
    assert config.dimse.transfer_syntaxes == DEFAULT_TRANSFER_SYNTAXES
    assert config.aets == ()
    assert (config.log.level, config.log.format, config.log_level) == ("INFO", "text", None)
    assert (config.health.interval, config.health.timeout, config.health.max_age) == (10, 5, 30)


def test_ae_defaults() -> None:
    ae = AeConfig(aet="PACS")

    assert (ae.backend, ae.host, ae.port, ae.retrieve) == ("dimse", "127.0.0.1", 104, "move")
    assert ae.calling_aet is None
    assert ae.called_aet == "PACS"
    assert ae.max_associations == 8
    assert ae.correlation == "auto"
    assert (ae.connect_timeout, ae.find_timeout, ae.first_store_timeout) == (10.0, 30.0, 120.0)
    assert (ae.idle_timeout, ae.store_timeout, ae.cancel_timeout) == (30.0, 60.0, 2.0)


def test_config_is_frozen() -> None:
    config = load_config(environ=NO_ENV)

    with pytest.raises(ValueError, match="frozen"):
        config.http.port = 1


def test_environment_is_not_read_when_environ_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RST_HTTP_PORT", "1234")

    assert load_config(environ=NO_ENV).http.port == 8080


# -- the TOML file ---------------------------------------------------------------------------


def test_file_sets_sections_and_aets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
log_level = "DEBUG"

[http]
host = "0.0.0.0"
port = 8042
cors_origins = ["*"]

[dimse]
aet = "GATEWAY"
port = 4242
channel_size = 8

[[aets]]
aet = "ORTHANC"
host = "pacs.example"
port = 4243
retrieve = "get"
calling_aet = "CALLER"

[[aets]]
aet = "OTHER"
""",
    )

    config = load_config(path, environ=NO_ENV)

    assert config.log.level == "DEBUG"  # the deprecated top-level key still counts
    assert (config.http.host, config.http.port, config.http.cors_origins) == (
        "0.0.0.0",
        8042,
        ("*",),
    )
    assert (config.dimse.aet, config.dimse.port, config.dimse.channel_size) == ("GATEWAY", 4242, 8)
    assert [ae.aet for ae in config.aets] == ["ORTHANC", "OTHER"]
    orthanc = dimse(config.ae("ORTHANC"))
    assert (orthanc.host, orthanc.port, orthanc.retrieve) == ("pacs.example", 4243, "get")
    assert config.calling_aet(orthanc) == "CALLER"
    other = dimse(config.ae("OTHER"))
    assert config.calling_aet(other) == "GATEWAY"
    assert config.ae("MISSING") is None


def test_file_accepts_path_as_string(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nport = 9000\n")

    assert load_config(str(path), environ=NO_ENV).http.port == 9000


def test_ae_title_is_stripped(tmp_path: Path) -> None:
    path = write(tmp_path, '[[aets]]\naet = "PACS  "\n')

    assert load_config(path, environ=NO_ENV).aets[0].aet == "PACS"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.toml"):
        load_config(missing, environ=NO_ENV)


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path, environ=NO_ENV)


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[http\nport = 1\n")

    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(path, environ=NO_ENV)


def test_unknown_top_level_key_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "colour = 'blue'\n")

    with pytest.raises(ConfigError, match=r"colour: Extra inputs are not permitted"):
        load_config(path, environ=NO_ENV)


@pytest.mark.parametrize("key", ["receiver", "client"])
@pytest.mark.parametrize("value", ["trio", "pynetdicom"])
def test_the_removed_stack_keys_are_refused_naming_the_key(
    tmp_path: Path, key: str, value: str
) -> None:
    path = write(tmp_path, f'[dimse]\n{key} = "{value}"\n')

    with pytest.raises(ConfigError, match=rf"dimse\.{key} was removed: .*delete the key"):
        load_config(path, environ=NO_ENV)


def test_the_removed_stack_keys_are_refused_from_the_environment() -> None:
    with pytest.raises(ConfigError, match="RST_DIMSE_CLIENT names no key of"):
        load_config(None, environ={"RST_DIMSE_CLIENT": "trio"})


def test_unknown_section_key_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nprot = 8080\n")

    with pytest.raises(ConfigError, match=r"http\.prot: Extra inputs"):
        load_config(path, environ=NO_ENV)


def test_unknown_ae_key_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, '[[aets]]\naet = "A"\n\n[[aets]]\naet = "B"\nhots = "x"\n')

    with pytest.raises(ConfigError, match=r"aets\.1\.hots: Extra inputs"):
        load_config(path, environ=NO_ENV)


def test_duplicate_ae_titles_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, '[[aets]]\naet = "PACS"\n\n[[aets]]\naet = "PACS"\nport = 5\n')

    with pytest.raises(ConfigError, match=r"aets: AE title 'PACS' is configured twice"):
        load_config(path, environ=NO_ENV)


def test_ae_titles_that_differ_only_by_padding_are_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path, '[[aets]]\naet = "PACS"\n\n[[aets]]\naet = "PACS "\n')

    with pytest.raises(ConfigError, match="configured twice"):
        load_config(path, environ=NO_ENV)


# -- called_aet: the route name and the AE title rst calls ----------------------------------


def test_called_aet_defaults_to_the_route_name_padding_removed(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[[aets]]\naet = " PACS "\n'), environ=NO_ENV)

    ae = dimse(config.ae("PACS"))
    assert (ae.aet, ae.called_aet) == ("PACS", "PACS")


def test_two_routes_may_call_the_same_ae_title(tmp_path: Path) -> None:
    # One PACS served by C-MOVE and by C-GET; two archives that both call themselves PACS.
    path = write(
        tmp_path,
        """
        [[aets]]
        aet = "PACS_MOVE"
        called_aet = "PACS"

        [[aets]]
        aet = "PACS_GET"
        called_aet = "PACS "
        retrieve = "get"

        [[aets]]
        aet = "OTHER"
        called_aet = "PACS"
        host = "10.0.0.9"
        """,
    )
    config = load_config(path, environ=NO_ENV)

    move, get, other = (dimse(config.ae(name)) for name in ("PACS_MOVE", "PACS_GET", "OTHER"))
    assert [ae.called_aet for ae in (move, get, other)] == ["PACS", "PACS", "PACS"]
    assert (move.retrieve, get.retrieve, other.host) == ("move", "get", "10.0.0.9")
    # the PACS calls rst's receiver with its own title, not with a route name
    assert move.callers == get.callers == ("PACS",)


def test_route_names_stay_unique_whatever_they_call(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[aets]]\naet = "PACS"\ncalled_aet = "A"\n\n[[aets]]\naet = "PACS"\ncalled_aet = "B"\n',
    )
    with pytest.raises(ConfigError, match=r"aets: AE title 'PACS' is configured twice"):
        load_config(path, environ=NO_ENV)


def test_env_sets_called_aet_not_mistaken_for_aet() -> None:
    config = load_config(None, environ={"RST_AETS_ROUTE_CALLED_AET": "REMOTE"})

    ae = dimse(config.ae("ROUTE"))
    assert (ae.aet, ae.called_aet, ae.calling_aet) == ("ROUTE", "REMOTE", None)


@pytest.mark.parametrize("bad", ["", "    ", "SEVENTEEN_CHARS_X", "BACK\\\\SLASH"])
def test_bad_called_aet_names_the_key(tmp_path: Path, bad: str) -> None:
    path = write(tmp_path, f'[[aets]]\naet = "PACS"\ncalled_aet = "{bad}"\n')
    with pytest.raises(ConfigError, match=r"aets\.0\.called_aet"):
        load_config(path, environ=NO_ENV)


def test_a_worker_gets_the_called_aet(tmp_path: Path) -> None:
    path = write(tmp_path, '[[aets]]\naet = "ROUTE"\ncalled_aet = "REMOTE"\n')
    config = load_config(path, environ=NO_ENV)

    again = Config.model_validate_json(config.model_dump_json())
    assert again == config
    assert dimse(again.ae("ROUTE")).called_aet == "REMOTE"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[http]\nport = 70000\n", "http.port"),
        ("[http]\nport = -1\n", "http.port"),
        ("[http]\nport = 'eighty'\n", "http.port"),
        ("[http]\ngraceful_timeout = 0\n", "http.graceful_timeout"),
        ("[http]\nmax_stow_bytes = 0\n", "http.max_stow_bytes"),
        ("[dimse]\naet = ''\n", "dimse.aet"),
        ("[dimse]\naet = 'SEVENTEEN_CHARS_X'\n", "dimse.aet"),
        ("[dimse]\naet = 'BACK\\\\SLASH'\n", "dimse.aet"),
        ("[dimse]\naet = '    '\n", "dimse.aet"),
        ("[dimse]\nchannel_size = 0\n", "dimse.channel_size"),
        ("[dimse]\nchannel_size = 65\n", "dimse.channel_size"),
        ("[dimse]\nstall_timeout = -1.0\n", "dimse.stall_timeout"),
        ("[dimse]\nmax_pdu = -1\n", "dimse.max_pdu"),
        ("[[aets]]\nport = 1\n", "aets.0.aet"),
        ("[[aets]]\naet = 'A'\nretrieve = 'fetch'\n", "aets.0.retrieve"),
        ("[[aets]]\naet = 'A'\n[[aets]]\naet = 'B'\nretrieve = 'fetch'\n", "aets.1.retrieve"),
        ("[[aets]]\naet = 'A'\nbackend = 'ftp'\n", "aets.0.backend"),
        ("[[aets]]\naet = 'A'\nbackend = 's3'\n", "aets.0.bucket"),
        ("[[aets]]\naet = 'A'\ncorrelation = 'guess'\n", "aets.0.correlation"),
        ("[[aets]]\naet = 'A'\nmax_associations = 0\n", "aets.0.max_associations"),
        ("log_level = 'TRACE'\n", "log_level"),
        ("[log]\nformat = 'xml'\n", "log.format"),
        ("[health]\ninterval = 0\n", "health.interval"),
        ("[health]\ninterval = 20\nmax_age = 10\n", "health"),
    ],
)
def test_invalid_value_names_the_key(tmp_path: Path, toml: str, key: str) -> None:
    path = write(tmp_path, toml)

    with pytest.raises(ConfigError) as info:
        load_config(path, environ=NO_ENV)

    message = str(info.value)
    assert message.startswith("invalid configuration: ")
    assert f"{key}: " in message


def test_config_error_is_not_chained_to_the_validation_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nport = 70000\n")

    with pytest.raises(ConfigError) as info:
        load_config(path, environ=NO_ENV)

    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_every_invalid_key_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nport = 70000\n\n[dimse]\nchannel_size = 0\n")

    with pytest.raises(ConfigError, match=r"http\.port: .*; dimse\.channel_size: "):
        load_config(path, environ=NO_ENV)


# -- environment overrides -------------------------------------------------------------------


def test_env_sets_http_port() -> None:
    assert load_config(environ={"RST_HTTP_PORT": "9090"}).http.port == 9090


def test_env_sets_dimse_aet() -> None:
    assert load_config(environ={"RST_DIMSE_AET": "GW"}).dimse.aet == "GW"


def test_env_sets_multi_word_key() -> None:
    config = load_config(
        environ={"RST_DIMSE_STALL_TIMEOUT": "1.5", "RST_HTTP_BASE_URL": "http://x"}
    )

    assert config.dimse.stall_timeout == 1.5
    assert config.http.base_url == "http://x"


def test_env_overrides_file_and_keeps_other_file_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nhost = '0.0.0.0'\nport = 8042\n")

    config = load_config(path, environ={"RST_HTTP_PORT": "9090"})

    assert (config.http.host, config.http.port) == ("0.0.0.0", 9090)


def test_env_comma_separated_value_becomes_a_tuple() -> None:
    config = load_config(environ={"RST_HTTP_CORS_ORIGINS": "https://a.example, https://b.example"})

    assert config.http.cors_origins == ("https://a.example", "https://b.example")


def test_env_single_item_list_needs_no_comma() -> None:
    config = load_config(environ={"RST_HTTP_CORS_ORIGINS": "*"})

    assert config.http.cors_origins == ("*",)


def test_env_list_may_be_a_json_array() -> None:
    config = load_config(environ={"RST_HTTP_CORS_ORIGINS": ' ["https://a.example,b"]'})

    assert config.http.cors_origins == ("https://a.example,b",)


def test_env_array_of_tables_is_a_json_array_and_joins_the_file(tmp_path: Path) -> None:
    # [[auth.tokens]] from a secret (a Kubernetes Secret as an environment variable), the rest
    # of [auth] from the file
    path = write(
        tmp_path,
        '[auth]\nopen_endpoints = ["livez", "readyz"]\n'
        '[[auth.grants]]\nrole = "ai"\naets = ["*"]\nallow = ["search"]\n',
    )
    digest = "ab" * 32
    tokens = f'[{{"name": "pipeline", "sha256": "{digest.upper()}", "roles": ["ai"]}}]'

    config = load_config(path, environ={"RST_AUTH_TOKENS": tokens})

    assert config.auth is not None
    assert [(t.name, t.sha256, t.roles) for t in config.auth.tokens] == [
        ("pipeline", digest, ("ai",))
    ]
    assert config.auth.open_endpoints == ("livez", "readyz")
    assert [g.role for g in config.auth.grants] == ["ai"]


def test_env_json_array_that_does_not_parse_names_the_variable_not_the_value() -> None:
    secret = "s3cr3t-token-value"
    with pytest.raises(ConfigError, match=r"RST_AUTH_TOKENS: not a JSON array") as caught:
        load_config(environ={"RST_AUTH_TOKENS": f'[{{"name": "{secret}"'})

    assert secret not in str(caught.value)


def test_env_array_of_tables_that_is_not_json_is_invalid() -> None:
    with pytest.raises(ConfigError, match=r"auth\.tokens\.0: "):
        load_config(environ={"RST_AUTH_TOKENS": "pipeline"})


def test_env_scalar_value_may_contain_commas() -> None:
    config = load_config(environ={"RST_HTTP_BASE_URL": "https://gw.example/a,b"})

    assert config.http.base_url == "https://gw.example/a,b"


def test_env_sets_log_level_and_format() -> None:
    config = load_config(environ={"RST_LOG_LEVEL": "WARNING", "RST_LOG_FORMAT": "json"})
    assert (config.log.level, config.log.format) == ("WARNING", "json")


def test_env_invalid_log_level_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"log\.level: "):
        load_config(environ={"RST_LOG_LEVEL": "LOUD"})


def test_the_deprecated_log_level_yields_to_nothing_but_must_agree(tmp_path: Path) -> None:
    path = write(tmp_path, "log_level = 'DEBUG'\n[log]\nlevel = 'DEBUG'\nformat = 'json'\n")
    assert load_config(path, environ=NO_ENV).log.level == "DEBUG"
    path = write(tmp_path, "log_level = 'DEBUG'\n[log]\nlevel = 'ERROR'\n")
    with pytest.raises(ConfigError, match=r"log_level is deprecated"):
        load_config(path, environ=NO_ENV)


def test_env_sets_health() -> None:
    config = load_config(environ={"RST_HEALTH_INTERVAL": "2", "RST_HEALTH_MAX_AGE": "9"})
    assert (config.health.interval, config.health.max_age) == (2.0, 9.0)


def test_env_invalid_http_port_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"http\.port: "):
        load_config(environ={"RST_HTTP_PORT": "not-a-port"})


def test_env_invalid_dimse_aet_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"dimse\.aet: "):
        load_config(environ={"RST_DIMSE_AET": "WAY_TOO_LONG_AE_TITLE"})


def test_env_ignores_variables_without_the_rst_prefix() -> None:
    config = load_config(environ={"HTTP_PORT": "1", "RSTX_HTTP_PORT": "2", "PATH": "/bin"})

    assert config == Config()


@pytest.mark.parametrize(
    ("name", "section"),
    [("RST_HTTP_BOGUS", "[http]"), ("RST_DIMSE_PROT", "[dimse]"), ("RST_HTTP_", "[http]")],
)
def test_env_unknown_section_key_is_rejected(name: str, section: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"environment variable {name} names no key of \{section}"
    ):
        load_config(environ={name: "3"})


def test_env_overrides_ae_from_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[[aets]]\naet = "ORTHANC"\nport = 4242\nhost = "pacs"\n')

    config = load_config(path, environ={"RST_AETS_ORTHANC_PORT": "4343"})

    assert len(config.aets) == 1
    assert (dimse(config.aets[0]).host, dimse(config.aets[0]).port) == ("pacs", 4343)


def test_env_ae_match_is_case_insensitive_on_the_file_side(tmp_path: Path) -> None:
    path = write(tmp_path, '[[aets]]\naet = "orthanc"\n')

    config = load_config(path, environ={"RST_AETS_ORTHANC_RETRIEVE": "get"})

    assert [(ae.aet, dimse(ae).retrieve) for ae in config.aets] == [("orthanc", "get")]


def test_env_ae_title_containing_underscore(tmp_path: Path) -> None:
    path = write(tmp_path, '[[aets]]\naet = "MY_PACS"\n\n[[aets]]\naet = "MY"\n')

    config = load_config(
        path,
        environ={"RST_AETS_MY_PACS_PORT": "5000", "RST_AETS_MY_PACS_MAX_ASSOCIATIONS": "2"},
    )

    my_pacs = dimse(config.ae("MY_PACS"))
    my = dimse(config.ae("MY"))
    assert (my_pacs.port, my_pacs.max_associations) == (5000, 2)
    assert (my.port, my.max_associations) == (104, 8)


def test_env_key_is_matched_from_the_end_longest_first() -> None:
    # ``calling_aet`` ends with ``aet`` and ``first_store_timeout`` with ``store_timeout``.
    config = load_config(
        environ={
            "RST_AETS_PACS_CALLING_AET": "CALLER",
            "RST_AETS_PACS_FIRST_STORE_TIMEOUT": "300",
            "RST_AETS_PACS_STORE_TIMEOUT": "5",
        }
    )

    assert len(config.aets) == 1
    ae = dimse(config.aets[0])
    assert (ae.aet, ae.calling_aet) == ("PACS", "CALLER")
    assert (ae.first_store_timeout, ae.store_timeout) == (300.0, 5.0)


def test_env_alone_creates_a_new_ae(tmp_path: Path) -> None:
    path = write(tmp_path, '[[aets]]\naet = "ORTHANC"\n')

    config = load_config(
        path, environ={"RST_AETS_NEW_PACS_HOST": "10.0.0.9", "RST_AETS_NEW_PACS_PORT": "11113"}
    )

    assert [ae.aet for ae in config.aets] == ["ORTHANC", "NEW_PACS"]
    new = dimse(config.ae("NEW_PACS"))
    assert (new.host, new.port) == ("10.0.0.9", 11113)


@pytest.mark.parametrize(
    "name",
    [
        "RST_AETS_PACS_COLOUR",  # no such key
        "RST_AETS_PORT",  # no AE title before the key
        "RST_AETS_",
    ],
)
def test_env_unknown_ae_key_is_rejected(name: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"environment variable {name} names no key of \[\[aets\]\]"
    ):
        load_config(environ={name: "1"})


def test_env_invalid_ae_value_names_the_indexed_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[[aets]]\naet = "A"\n\n[[aets]]\naet = "B"\n')

    with pytest.raises(ConfigError, match=r"aets\.1\.retrieve: "):
        load_config(path, environ={"RST_AETS_B_RETRIEVE": "fetch"})

    with pytest.raises(ConfigError, match=r"aets\.0\.retrieve: "):
        load_config(path, environ={"RST_AETS_A_RETRIEVE": "fetch"})


def test_env_invalid_value_on_env_only_ae_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"aets\.0\.port: "):
        load_config(environ={"RST_AETS_PACS_PORT": "99999"})


@pytest.mark.parametrize(
    ("toml", "variable", "key"),
    [
        ('http = "x"\n', "RST_HTTP_PORT", "http"),
        ("aets = { a = 1 }\n", "RST_AETS_X_PORT", "aets"),
        ('aets = ["PACS"]\n', "RST_AETS_X_PORT", "aets"),
    ],
)
def test_env_overlay_on_malformed_section_is_a_config_error(
    tmp_path: Path, toml: str, variable: str, key: str
) -> None:
    path = write(tmp_path, toml)

    with pytest.raises(ConfigError, match=key):
        load_config(path, environ={variable: "1"})


def test_malformed_sections_without_env_overlay_are_config_errors(tmp_path: Path) -> None:
    for toml, key in [('http = "x"\n', "http"), ("aets = { a = 1 }\n", "aets")]:
        path = write(tmp_path, toml)
        with pytest.raises(ConfigError, match=rf"{key}: "):
            load_config(path, environ=NO_ENV)


def test_env_overrides_padded_ae_title_from_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[[aets]]\naet = "PACS "\n')

    config = load_config(path, environ={"RST_AETS_PACS_PORT": "7"})

    assert [(ae.aet, dimse(ae).port) for ae in config.aets] == [("PACS", 7)]


# -- workers ---------------------------------------------------------------------------------


def test_workers_from_file_and_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nworkers = 2\n")

    assert load_config(path, environ=NO_ENV).http.workers == 2
    assert load_config(path, environ={"RST_HTTP_WORKERS": "4"}).http.workers == 4


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[http]\nworkers = 0\n", "http.workers"),
        (
            '[http]\nworkers = 2\n[[aets]]\naet = "PACS"\ncorrelation = "uid"\n',
            'PACS: correlation = "uid" needs http.workers = 1',
        ),
    ],
)
def test_workers_need_what_passes_associations_between_them(
    tmp_path: Path, toml: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, toml), environ=NO_ENV)


def test_the_whole_configuration_reaches_a_worker_unchanged(tmp_path: Path) -> None:
    # The supervisor hands workers its validated configuration as JSON.
    path = write(
        tmp_path,
        '[http]\nworkers = 2\ncors_origins = ["*"]\n[[aets]]\naet = "PACS"\nretrieve = "get"\n'
        '[[aets]]\naet = "S3"\nbackend = "s3"\nbucket = "images"\nendpoint = "http://127.0.0.1:9"\n',
    )
    config = load_config(path, environ=NO_ENV)

    assert Config.model_validate_json(config.model_dump_json()) == config


def test_receiver_callers_from_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [dimse]
        accept_unknown_callers = true

        [[aets]]
        aet = "PACS"
        store_calling_aets = ["PACS_SCU ", "PACS2"]
        store_from = ["10.0.0.5", "10.0.1.0/24", "fd00::/8"]
        """,
    )
    config = load_config(path, environ=NO_ENV)
    assert config.dimse.accept_unknown_callers is True
    ae = dimse(config.ae("PACS"))
    assert ae.callers == ("PACS_SCU", "PACS2")
    assert ae.store_from == ("10.0.0.5/32", "10.0.1.0/24", "fd00::/8")


def test_receiver_callers_defaults() -> None:
    config = load_config(None, environ={"RST_AETS_PACS_PORT": "104"})
    assert config.dimse.accept_unknown_callers is False
    ae = dimse(config.ae("PACS"))
    assert ae.callers == ("PACS",)
    assert ae.store_from == ()


def test_env_sets_store_from() -> None:
    environ = {"RST_AETS_PACS_STORE_FROM": "10.0.0.5, 10.0.1.0/24"}
    ae = dimse(load_config(None, environ=environ).ae("PACS"))
    assert ae.store_from == ("10.0.0.5/32", "10.0.1.0/24")


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "10.0.1.1/24", "example.org", "10.0.0"])
def test_bad_store_from_is_a_config_error(bad: str) -> None:
    environ = {"RST_AETS_PACS_STORE_FROM": bad}
    with pytest.raises(ConfigError, match=r"aets\.0\.store_from: .*not an IP address or network"):
        load_config(None, environ=environ)
