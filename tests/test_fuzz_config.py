"""Configuration fuzzing: any nurture.toml (random TOML over the real sections and keys,
random values, broken TOML bytes) and any NURTURE_* value gives Settings or a ConfigError;
never another exception, never a hang."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import strategies as st

from nurture_mail.config import _SCHEMA, Settings, load_settings
from nurture_mail.errors import ConfigError

from .fuzz_strategies import fuzz, mutated_bytes, nasty_text

SECTIONS = sorted(_SCHEMA)
KEYS = sorted({key for keys in _SCHEMA.values() for key in keys})
SKELETON = (Path(__file__).resolve().parents[1] / "nurture_mail" / "skeleton" / "nurture.toml").read_bytes()


def toml_string(text: str) -> str:
    return '"' + "".join(
        c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"
        for c in text
    ) + '"'


toml_values = st.recursive(
    st.one_of(
        nasty_text.map(toml_string),
        st.sampled_from(["https://x.example/u/", "http://localhost/u/", "smtp://u:p@h:25", "imaps://u:p@h/INBOX",
                         "sqlite:///x.db", "required", "off", "UTC", "Mars/Base", "7d", "0d", "x" * 300,
                         "Dana <d@x.example>", "no address", "Europe/" * 200, "../../etc", "\u0000"]).map(toml_string),
        st.integers(-(2**63), 2**63 - 1).map(str),
        st.floats(allow_nan=False).map(lambda f: repr(f).replace("inf", "inf")),
        st.sampled_from(["true", "false", "nan", "inf", "-inf", "1979-05-27T07:32:00Z", "1979-05-27", "07:32:00"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=3).map(
            lambda d: "{" + ", ".join(f'"{k}" = {v}' for k, v in d.items()) + "}"),
    ),
    max_leaves=6,
)


@st.composite
def toml_documents(draw):
    lines = []
    for section in draw(st.lists(st.one_of(st.sampled_from(SECTIONS), st.just("unknown")), max_size=5, unique=True)):
        lines.append(f"[{section}]")
        keys = st.one_of(st.sampled_from(sorted(_SCHEMA.get(section, {"x": 0}))), st.sampled_from(KEYS))
        for key in draw(st.lists(keys, max_size=4, unique=True)):
            lines.append(f'"{key}" = {draw(toml_values)}')
    return "\n".join(lines) + "\n"


def check_file(tmp_path: Path, data: bytes, env: dict | None = None) -> None:
    path = tmp_path / "nurture.toml"
    path.write_bytes(data)
    try:
        settings = load_settings(path, env=env or {}, cwd=tmp_path)
    except ConfigError as error:
        assert str(error)
        return
    assert isinstance(settings, Settings)
    assert settings.unsubscribe_base_url.endswith("/")


@pytest.mark.timeout(300)
def test_random_toml_documents(request, tmp_path):
    fuzz(request, toml_documents(), lambda text: check_file(tmp_path, text.encode("utf-8", "surrogatepass")))


@pytest.mark.timeout(300)
def test_mutated_sample_config(request, tmp_path):
    fragments = [b"[", b"]", b"=", b'"', b"'''", b"\n", b"[smtp]\n", b"url = ", b"\xff", b"\x00", b"#", b"1e999",
                 b"[[x]]\n", b"a.b.c = 1\n", b"timezone = \"Mars/Base\"\n"]
    fuzz(request, mutated_bytes([SKELETON], fragments), lambda data: check_file(tmp_path, data))


@pytest.mark.timeout(300)
def test_random_environment_values(request, tmp_path):
    names = [f"NURTURE_{section.upper()}_{key.upper()}" for section, keys in _SCHEMA.items() for key in keys]
    names += ["NURTURE_NOW", "NURTURE_CONFIG"]
    env = st.dictionaries(
        st.sampled_from(names),
        st.one_of(nasty_text, st.sampled_from(["-1", "1e3", "99999999999999999999999", "2027-03-01", "  ", "x" * 300,
                                               "https://x.example/u", "\x00", "Mars/Base", "0"])),
        max_size=4,
    ).map(lambda d: {k: v.replace("\x00", "") if k == "NURTURE_CONFIG" else v for k, v in d.items()})

    def check(environment):
        if "\x00" in environment.get("NURTURE_CONFIG", ""):
            return
        check_file(tmp_path, b'[company]\nname = "Acme"\n', environment)

    fuzz(request, env, check)


def test_toml_datetimes_are_refused_cleanly(tmp_path):
    for value in (dt.datetime(2027, 1, 1).isoformat(), "1979-05-27", "07:32:00"):
        with pytest.raises(ConfigError):
            load_settings(_write(tmp_path, f"[defaults]\ntimezone = {value}\n"), env={}, cwd=tmp_path)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nurture.toml"
    path.write_text(text)
    return path
