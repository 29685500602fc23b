"""Agent configuration: file → text → dict → model, strict at every step."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from edge_agent.agent import Agent
from edge_agent.config import (
    AgentConfig,
    ConfigError,
    apply_changes,
    config_from_dict,
    load_config_file,
    parse_config_text,
)
from hardware import SimBackend, SimIndicator

AGENT_TOML = """
node_id = "lhr-gulberg-0042"
serial = "RPI-0042"
site_id = "gulberg-pillar-7"
district = "lahore"
data_dir = "{data_dir}"

[mqtt]
url = "mqtt://127.0.0.1:18830"
keepalive_s = 20

[panic]
pin = 17
hold_to_confirm_ms = 500

[telemetry]
interval_s = 60

[hardware]
backend = "sim"
"""


def test_a_toml_file_loads_with_defaults_filled_in(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(AGENT_TOML.format(data_dir=tmp_path / "data"))
    config = load_config_file(path)
    assert config.mqtt.host == "127.0.0.1"
    assert config.mqtt.port == 18830
    assert config.panic.hold_to_confirm_ms == 500
    assert config.panic.debounce_ms == 30
    assert config.panic.stuck_after_s == 30.0
    assert config.outbox.max_events == 10_000
    assert config.outbox.resend_after_s == 10.0
    assert config.outbox.synchronous == "full"


def test_yaml_text_gives_the_same_dict_shape() -> None:
    data = parse_config_text("node_id: abc\nmqtt:\n  keepalive_s: 10\n", fmt="yaml")
    assert data == {"node_id": "abc", "mqtt": {"keepalive_s": 10}}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"colour": "red"}, "colour"),
        ({"panic": {"debounce_ms": 30, "debounse_ms": 5}}, "debounse_ms"),
        ({"panic": {"debounce_ms": 5000}}, "debounce_ms"),
        ({"mqtt": {"url": "http://example.org"}}, "mqtt"),
        ({"node_id": "Bad Node"}, "node_id"),
        ({"hardware": {"backend": "arduino"}}, "backend"),
    ],
)
def test_unknown_keys_and_out_of_bounds_values_are_refused(
    tmp_path: Path, change: dict[str, object], match: str
) -> None:
    data: dict[str, object] = {"node_id": "lhr-1", "serial": "s", "data_dir": str(tmp_path)}
    data.update(change)
    with pytest.raises(ConfigError, match=match):
        config_from_dict(data)


def test_broken_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("node_id = ")
    with pytest.raises(ConfigError, match="toml"):
        load_config_file(path)


def test_runtime_changes_are_all_or_nothing_and_strictly_typed(tmp_path: Path) -> None:
    config = config_from_dict({"node_id": "lhr-1", "serial": "s", "data_dir": str(tmp_path)})
    changed = apply_changes(config, {"panic.debounce_ms": 50, "telemetry.interval_s": 5})
    assert changed.panic.debounce_ms == 50
    assert changed.telemetry.interval_s == 5.0
    assert config.panic.debounce_ms == 30  # the original is untouched
    for bad in ({"panic.debounce_ms": "50"}, {"panic.debounce_ms": True}, {"node_id": "x"}):
        with pytest.raises(ConfigError):
            apply_changes(config, bad)


def _undocumented(model: type[BaseModel]) -> list[str]:
    """Fields of `model` and every model it uses whose schema has no description.

    Pydantic gives every field a title, so a title proves nothing; the
    description is what a technician reads. Wire models reused from `proto`
    (``GeoPoint``) are the contract's to document, not the config's.
    """
    import proto.messages

    schema = model.model_json_schema()
    models = {model.__name__: schema, **schema.get("$defs", {})}
    missing = []
    for name, spec in models.items():
        if getattr(getattr(proto.messages, name, None), "__module__", "") == "proto.messages":
            continue
        for field, prop in spec.get("properties", {}).items():
            if not str(prop.get("description", "")).strip():
                missing.append(f"{name}.{field}")
    return missing


def test_every_config_field_has_a_description() -> None:
    assert _undocumented(AgentConfig) == []


def test_every_registered_hardware_backend_documents_its_options() -> None:
    from hardware import BOARDS, CAMERAS
    from hardware.power import MONITORS

    for registry in (BOARDS, MONITORS, CAMERAS):
        for name in registry.names():
            model = registry.model(name)
            assert model.model_config.get("extra") == "forbid", model.__name__
            assert _undocumented(model) == [], model.__name__


def test_the_description_check_catches_a_field_without_one() -> None:
    class Careless(BaseModel):
        documented: int = Field(default=1, description="has one")
        bare: int = 2

    assert _undocumented(Careless) == ["Careless.bare"]


def test_agent_builds_from_a_plain_dict_on_simulated_hardware(tmp_path: Path) -> None:
    agent = Agent.from_dict(
        {"node_id": "lhr-sim-1", "serial": "s", "data_dir": str(tmp_path)}, backend=SimBackend()
    )
    try:
        assert isinstance(agent.indicator, SimIndicator)
        assert agent.indicator_history[0].pattern.value == "idle"
        assert agent.outbox_depth == 0
    finally:
        agent.close()


def test_the_agent_subcommand_registers() -> None:
    from edge_agent.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["agent", "--config", "agent.toml"])
    assert args.config == Path("agent.toml")
    assert callable(args.func)


def test_the_agent_subcommand_reports_a_bad_config(tmp_path: Path) -> None:
    from edge_agent.console import main

    path = tmp_path / "agent.toml"
    path.write_text('node_id = "lhr-1"\nserial = "s"\n')  # no data_dir
    assert main(["agent", "--config", str(path)]) == 2


def _base(tmp_path: Path, **extra: object) -> dict[str, object]:
    return {"node_id": "lhr-1", "serial": "s", "data_dir": str(tmp_path), **extra}


def test_hardware_is_chosen_by_type_with_each_backends_own_options(tmp_path: Path) -> None:
    from hardware import RpiBoardConfig
    from hardware.camera import OpenCvCameraConfig
    from hardware.power import Ina219MonitorConfig

    config = config_from_dict(
        _base(
            tmp_path,
            hardware={"type": "rpi", "pin_factory": "lgpio"},
            power={"enabled": True, "monitor": {"type": "ina219", "battery_shunt_ohm": 0.01}},
            cameras=[{"type": "opencv", "id": "cam-1", "url": "rtsp://10.0.0.5/stream1"}],
        )
    )
    assert config.hardware == RpiBoardConfig(type="rpi", pin_factory="lgpio")
    assert isinstance(config.power.monitor, Ina219MonitorConfig)
    assert config.power.monitor.battery_shunt_ohm == 0.01
    assert isinstance(config.cameras[0], OpenCvCameraConfig)
    dumped = config.model_dump(mode="json")
    assert dumped["hardware"] == {"type": "rpi", "pin_factory": "lgpio"}
    assert dumped["power"]["monitor"]["battery_address"] == 0x41
    assert config_from_dict(dumped) == config  # the dump loads back (config_hash is stable)


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"hardware": {"type": "rpi", "pin_factry": "lgpio"}}, "pin_factry"),
        ({"hardware": {"type": "rpi", "backend": "sim"}}, "type only"),
        ({"power": {"monitor": {"type": "ina219", "shunt": 1}}}, "shunt"),
        ({"power": {"monitor": {"type": "ups-hat"}}}, "unknown power monitor backend"),
        ({"cameras": [{"type": "opencv"}]}, "exactly one of device, url, file, folder"),
        ({"cameras": [{"type": "sim"}, {"type": "sim"}]}, "unique"),
    ],
)
def test_backend_options_are_checked_by_the_named_backends_model(
    tmp_path: Path, section: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict(_base(tmp_path, **section))


def test_old_agent_toml_spellings_still_load(tmp_path: Path) -> None:
    from hardware import SimBoardConfig
    from hardware.power import SimMonitorConfig

    path = tmp_path / "agent.toml"
    path.write_text(
        f'node_id = "lhr-1"\nserial = "s"\ndata_dir = "{tmp_path}"\n'
        '[hardware]\nbackend = "sim"\n'
        '[power]\nenabled = true\nmonitor = "sim"\n'
        'monitor_options = { city = "karachi", panel_w = 400, soc = 0.5 }\n'
    )
    config = load_config_file(path)
    assert config.hardware == SimBoardConfig(type="sim")
    assert config.power.monitor == SimMonitorConfig(
        type="sim", city="karachi", panel_w=400.0, soc=0.5
    )
    unnamed = config_from_dict(_base(tmp_path, hardware={"backend": None}))
    assert unnamed.hardware is None


def test_old_monitor_options_without_a_monitor_say_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[power.monitor\]"):
        config_from_dict(_base(tmp_path, power={"monitor_options": {"i2c_bus": 2}}))
