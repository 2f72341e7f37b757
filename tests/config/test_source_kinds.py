"""[source] kind = "blissdata" / "pva": their keys are checked at load, with the file named."""

from __future__ import annotations

import pytest

from stream.config.base import ConfigError
from stream.config.schema import Config


@pytest.mark.parametrize("text, words", [
    ('kind = "pva"\n', ["c.toml", "kind pva needs pv"]),
    ('kind = "blissdata"\nredis_url = "localhost:6379"\n', ["c.toml", "redis_url"]),
    ('kind = "blissdata"\nframe_timeout = 0\n', ["c.toml", "frame_timeout", "> 0"]),
    ('kind = "blissdata"\nquiet_warning = -1.0\n', ["c.toml", "quiet_warning", "> 0"]),
    ('kind = "pva"\npv = "X"\nqueue = 0\n', ["c.toml", "queue must be >= 1"]),
    ('kind = "pva"\npv = "X"\nimages_pv = "N"\n', ["c.toml", "images_pv needs acquire_pv"]),
    ('kind = "pva"\npv = "X"\nchannels = { omega = 3 }\n', ["c.toml", "channels"]),
    ('kind = "blissdata"\nmotors = ["omega"]\n[source.channels]\nomega = "axis:diffrz"\n'
     'frame_timeout = 2.0\n', ["c.toml", "frame_timeout = 2.0 is not a name",
                                "probably belongs in [source]", "before [source.channels]"]),
    ('kind = "blissdata"\nmotors = ["omega"]\ncounters = ["mon"]\n'  # a motor's typo
     'channels = { omgea = "axis:diffrz" }\n',
     ["c.toml", "[source] channels", "'omgea'", "motors (omega)", "counters (mon)"]),
    ('kind = "pva"\npv = "X"\nchannels = { omega = "OMEGA" }\n', ["'omega'", "motors (none)"]),
    ('kind = "epics"\n', ["c.toml", "kind must be one of", "blissdata", "pva"]),
])
def test_bad_source_keys_name_key_and_file(tmp_path, text, words):
    path = tmp_path / "c.toml"
    path.write_text("[source]\n" + text)
    with pytest.raises(ConfigError) as err:
        Config.load(path)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


@pytest.mark.parametrize("kind", ['kind = "pva"\npv = "X"', 'kind = "blissdata"',
                                  'kind = "dectris"'])
@pytest.mark.parametrize("trajectory, words", [
    ('{ kind = "sweap", fast = "omega" }', ["'sweap'", "sweep, interlaced"]),
    ('{ kind = "sweep", fast = "omgea" }', ["'omgea'", "not among [source] motors",
                                            "omega, dty"]),
    ('{ kind = "grid", fast = "omega", slow = "dty" }', ["'nfast' is required"]),
    ('{ kind = "sweep", fast = "omega", tolerence = 0.1 }', ["unknown key 'tolerence'"]),
    ('{ kind = "free", tolerance = { omega = 0.4, dtz = 0.5 } }', ["'dtz'", "not among"]),
])
def test_a_bad_trajectory_is_a_config_error_not_rejected_scans(tmp_path, kind, trajectory,
                                                                words):
    """The start message's own check, at load: a typo used to pass and every scan was
    rejected at run time (no file, `run --scans 1` never ended)."""
    path = tmp_path / "c.toml"
    path.write_text(f'[source]\n{kind}\nmotors = ["omega", "dty"]\n'
                    f'trajectory = {trajectory}\n')
    with pytest.raises(ConfigError) as err:
        Config.load(path)
    for w in ["c.toml", "[source] trajectory", *words]:
        assert w in str(err.value), (w, str(err.value))


def test_a_good_trajectory_passes_and_motors_from_the_scan_are_not_checked(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[source]\nkind = "blissdata"\n'
                    'trajectory = { kind = "snake", nfast = 10, fast = "x", slow = "y" }\n')
    assert Config.load(path)["source"]["trajectory"]["kind"] == "snake"
    path.write_text('[source]\nkind = "pva"\npv = "X"\nmotors = ["omega", "dty"]\n'
                    'trajectory = { kind = "grid", nfast = 10, fast = "omega", slow = "dty" }\n')
    assert Config.load(path)["source"]["trajectory"]["nfast"] == 10


def test_a_missing_package_or_server_is_a_clear_error():
    from stream.sources.base import open_source

    config = Config({"source": {"kind": "blissdata", "redis_url": "redis://127.0.0.1:1"}})
    with pytest.raises(ValueError, match="blissdata: cannot use redis://127.0.0.1:1"):
        open_source(config)


def test_the_bliss_configs_optional_keys_load_once_uncommented(tmp_path):
    """They sat under [source.channels], so uncommenting one made it a channel (error)."""
    from tests.support.paths import CONFIGS

    lines = (CONFIGS / "bliss.toml").read_text().splitlines()
    optional = [i for i, line in enumerate(lines) if line.startswith(("# frame_timeout",
                                                                      "# reconnect_timeout"))]
    assert len(optional) == 2
    for i in optional:
        lines[i] = lines[i][2:].replace("10.0", "2.0").replace("30.0", "5.0")
    path = tmp_path / "bliss.toml"
    path.write_text("\n".join(lines) + "\n")
    source = Config.load(path)["source"]
    assert (source["frame_timeout"], source["reconnect_timeout"]) == (2.0, 5.0)


def test_keys_of_another_kind_are_warned_about_once(tmp_path, caplog):
    """kind = "zmq" with pv = ... was accepted without a word."""
    import logging

    caplog.set_level(logging.WARNING, "stream.config.sources")
    path = tmp_path / "c.toml"
    path.write_text('[source]\nkind = "zmq"\npv = "X:Image"\nsession = "id11"\n')
    config = Config.load(path)
    Config.from_text(config.text(), "effective")  # a worker's reload: said already
    said = sorted(r.getMessage() for r in caplog.records)
    assert len(said) == 2, said
    assert "c.toml: [source] pv = 'X:Image' is not read by kind zmq (only by pva)" in said[0]
    assert "c.toml: [source] session = 'id11' is not read by kind zmq (only by blissdata)" \
        in said[1]


def test_the_shipped_configs_set_no_key_their_kind_does_not_read(caplog):
    import logging

    from tests.support.paths import CONFIGS

    caplog.set_level(logging.WARNING, "stream.config.sources")
    for path in sorted(CONFIGS.glob("*.toml")):
        Config.load(path)
    assert not caplog.records, [r.getMessage() for r in caplog.records]


def test_listen_given_to_a_source_that_does_not_listen_is_warned_about(caplog):
    """`run --listen` with blissdata or pva was silently ignored; --help now names the
    source kinds."""
    import argparse
    import logging
    import subprocess
    import sys

    from stream.cli.commands import _config
    from tests.support.paths import CONFIGS, ROOT

    caplog.set_level(logging.WARNING, "stream.config.sources")
    _config(argparse.Namespace(config=str(CONFIGS / "bliss.toml"), listen="tcp://127.0.0.1:7"))
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].endswith(
        "bliss.toml (command line source.listen): [source] listen = 'tcp://127.0.0.1:7' is not "
        "read by kind blissdata (only by zmq, dectris): ignored"), said
    for command in ("run", "daemon"):
        h = subprocess.run([sys.executable, "-m", "stream.cli", command, "--help"],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert all(k in h.stdout for k in ("'zmq'", "'dectris'", "'blissdata'", "'pva'")), \
            h.stdout
