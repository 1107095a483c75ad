"""Configuration: defaults, every bad key named by its path, and the CLI's answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.config import embedded_defaults, load_config, parse_config
from sidecar.errors import ConfigError

EXAMPLE = Path(__file__).parents[1] / "configs" / "sidecar.example.yaml"


def test_example_config_has_every_key_and_loads():
    cfg = load_config(EXAMPLE)
    assert cfg.socket.path == "/var/run/drift-sidecar/events.sock"
    assert cfg.socket_mode == 0o660
    fraud = cfg.model("fraud")
    assert fraud is not None
    assert cfg.drift_for(fraud).window_size == 20000
    assert cfg.drift_for(fraud).psi_bins == 10  # inherited
    # Every settings field appears in the example, so users see every key.
    text = EXAMPLE.read_text()
    import msgspec

    from sidecar import config as c

    for struct in (
        c.SocketSettings,
        c.HttpSettings,
        c.DriftSettings,
        c.GpuSettings,
        c.AutoRegisterSettings,
        c.StateSettings,
        c.ReloadSettings,
        c.LogSettings,
        c.LimitsSettings,
        c.ModelSpec,
        c.EmbeddingSpec,
        c.LabelSettings,
    ):
        for f in msgspec.structs.fields(struct):
            assert f"{f.name}:" in text, f"{struct.__name__}.{f.name} missing from the example"


def test_defaults_need_no_file():
    cfg = embedded_defaults()
    assert cfg.http.host == "127.0.0.1" and cfg.http.port == 9108
    assert cfg.auto_register.enabled
    assert cfg.drift.correction == "bonferroni"
    assert parse_config({"auto_register": {"enabled": True}}).models == []


def test_a_file_that_would_refuse_every_event_is_refused(tmp_path):
    """No model and no auto-registration: every event would be `unknown_model`."""
    for raw in ({}, {"models": []}, {"auto_register": {"enabled": False}}):
        with pytest.raises(ConfigError) as err:
            parse_config(raw)
        assert [p.split(":")[0] for p in err.value.problems] == ["models"]
        assert "auto_register.enabled" in err.value.problems[0]
    path = tmp_path / "empty.yaml"
    path.write_text("http: {port: 9200}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "models:" in proc.stderr and "auto_register.enabled" in proc.stderr


def test_every_bad_key_is_named_by_its_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "socket:\n  max_line_bytes: big\n  bogus: 1\n"
        "drift:\n  correction: holm\n"
        "models:\n  - name: fraud\n    baseline: {path: b.parquet}\n"
        "    features:\n      - {name: amount, type: cat}\n      - {nme: x}\n"
        "gpu: {enabled: maybe}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    problems = err.value.problems
    paths = {p.split(":")[0] for p in problems}
    assert paths == {
        "socket.max_line_bytes",
        "socket.bogus",
        "drift.correction",
        "models[0].features[0].type",
        "models[0].features[1].nme",
        "models[0].features[1].name",
        "gpu.enabled",
    }
    assert str(bad) in str(err.value)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"http": {"port": 70000}}, "http.port"),
        ({"socket": {"mode": "0o9"}}, "socket.mode"),
        ({"drift": {"min_samples": 20000}}, "drift.min_samples"),
        ({"drift": {"p_value": 1.5}}, "drift.p_value"),
        ({"drift": {"false_alarm_rate": 0}}, "drift.false_alarm_rate"),
        ({"drift": {"false_alarm_rate": 1.0}}, "drift.false_alarm_rate"),
        ({"drift": {"false_alarm_rate": float("nan")}}, "drift.false_alarm_rate"),
        ({"drift": {"false_alarm_period_s": 0}}, "drift.false_alarm_period_s"),
        ({"drift": {"false_alarm_period_s": float("inf")}}, "drift.false_alarm_period_s"),
        ({"drift": {"false_alarm_period_s": "a day"}}, "drift.false_alarm_period_s"),
        (
            {
                "models": [
                    {"name": "m", "baseline": {"capture": 5}, "drift": {"false_alarm_rate": -0.1}}
                ]
            },
            "models[0].drift.false_alarm_rate",
        ),
        ({"models": [{"name": "m", "baseline": {}}]}, "models[0].baseline"),
        (
            {
                "models": [
                    {"name": "m", "baseline": {"capture": 5}},
                    {"name": "m", "baseline": {"capture": 5}},
                ]
            },
            "models[1].name",
        ),
        (
            {
                "models": [
                    {
                        "name": "m",
                        "baseline": {"capture": 5},
                        "features": [{"name": "a"}, {"name": "a"}],
                    }
                ]
            },
            "models[0].features[1].name",
        ),
        (
            {"models": [{"name": "m", "baseline": {"capture": 5}, "drift": {"window_size": 10}}]},
            "models[0].drift.min_samples",
        ),
        (
            {
                "models": [
                    {
                        "name": "m",
                        "baseline": {"capture": 5},
                        "features": [{"name": "a", "buckets": [2, 1]}],
                    }
                ]
            },
            "models[0].features[0].buckets",
        ),
        ({"gpu": {"visible_process_model": "nope"}}, "gpu.visible_process_model"),
        ([1, 2], "$"),
        ({"models": {"name": "m"}}, "models"),
    ],
)
def test_semantic_problems_name_the_key(raw, path):
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert any(p.startswith(path + ":") for p in err.value.problems), err.value.problems


def test_yaml_octal_spellings_of_the_socket_mode():
    auto = {"auto_register": {"enabled": True}}
    assert parse_config({"socket": {"mode": 0o600}, **auto}).socket_mode == 0o600
    assert parse_config({"socket": {"mode": "0o640"}, **auto}).socket_mode == 0o640
    assert parse_config({"socket": {"mode": "660"}, **auto}).socket_mode == 0o660


def test_relative_paths_resolve_against_the_file(tmp_path):
    f = tmp_path / "sub" / "sidecar.yaml"
    f.parent.mkdir()
    f.write_text("state_dir: st\nmodels:\n  - {name: m, baseline: {path: b.parquet}}\n")
    cfg = load_config(f)
    assert cfg.state_path == f.parent / "st"
    assert cfg.resolve("b.parquet") == f.parent / "b.parquet"


def test_check_config_command(tmp_path):
    good = subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "check-config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0 and "OK" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("http:\n  port: nine\nextra: 1\n")
    res = subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "check-config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 2
    assert "http.port" in res.stderr and "extra: unknown key" in res.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "check-config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2 and "cannot read file" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1,\n")
    res = subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "check-config", str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 2 and "not valid YAML" in res.stderr


def test_configured_names_must_fit_the_label_limit_and_be_utf8():
    long = "f" * 129
    raw = {
        "limits": {"max_label_bytes": 128},
        "models": [
            {
                "name": "m" * 129,
                "version": "v" * 200,
                "baseline": {"capture": 10},
                "features": [{"name": long}, {"name": "ok\udfff"}, {"name": "é" * 64}],
            }
        ],
    }
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    paths = sorted(p.split(":")[0] for p in err.value.problems)
    assert paths == [
        "models[0].features[0].name",
        "models[0].features[1].name",
        "models[0].name",
        "models[0].version",
    ]
    assert any("not valid UTF-8" in p for p in err.value.problems)
    raw["limits"] = {"max_label_bytes": 4}
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert any(p.startswith("limits.max_label_bytes:") for p in err.value.problems)


def test_http_limits_are_checked():
    with pytest.raises(ConfigError) as err:
        parse_config(
            {
                "auto_register": {"enabled": True},
                "http": {
                    "max_connections": 0,
                    "idle_timeout_s": 0,
                    "body_timeout_s": -1,
                    "max_body_bytes": 100,
                    "max_inflight_body_bytes": 50,
                },
            }
        )
    assert sorted(p.split(":")[0] for p in err.value.problems) == [
        "http.body_timeout_s",
        "http.idle_timeout_s",
        "http.max_connections",
        "http.max_inflight_body_bytes",
    ]


def test_false_alarm_keys_default_and_override_per_model():
    cfg = parse_config(
        {
            "drift": {"false_alarm_rate": 0.01},
            "models": [
                {
                    "name": "m",
                    "baseline": {"capture": 5},
                    "drift": {"false_alarm_period_s": 3600, "interval_s": 10},
                }
            ],
        }
    )
    assert cfg.drift.false_alarm_rate == 0.01 and cfg.drift.false_alarm_period_s == 86_400
    d = cfg.drift_for(cfg.models[0])
    assert (d.false_alarm_rate, d.false_alarm_period_s, d.interval_s) == (0.01, 3600, 10)
    assert parse_config({"auto_register": {"enabled": True}}).drift.false_alarm_rate == 0.05
