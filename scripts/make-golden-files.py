# Regenerates proto/golden/*.json. Run only for a deliberate, compatible contract change;
# the golden tests exist to make breaking changes fail the build.
from datetime import datetime, timezone

from proto.catalog import GOLDEN_DIR
from proto.codec import encode
from proto.messages import *

ts = datetime(2026, 11, 22, 14, 30, 5, 123456, tzinfo=timezone.utc)
N = "lhr-gulberg-0042"
E = "01JD0Q5Z8M3K7T2W9X4Y6V1R0N"
R = "01JD0Q60000000000000000001"
sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
msgs = {
    "status": Status(node_id=N, ts=ts, state="online", bd_seq=7),
    "birth": Birth(
        node_id=N,
        ts=ts,
        bd_seq=7,
        serial="NB-PILLAR-000042",
        hardware="rpi4-pillar-v2",
        firmware=Firmware(version="0.1.0", slot="a", build="2026.11.20"),
        capabilities=[
            Capability.PANIC_BUTTON,
            Capability.INDICATOR,
            Capability.CAMERA,
            Capability.POWER_MONITOR,
        ],
        config_hash="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        site_id="gulberg-main-blvd",
        district="lahore-gulberg",
        location=GeoPoint(lat=31.5204, lon=74.3587),
        last_seq=1041,
    ),
    "telemetry": Telemetry(
        node_id=N,
        ts=ts,
        uptime_s=86400.5,
        cpu_percent=12.5,
        mem_percent=41.0,
        disk_free_mb=5120.0,
        temperature_c=48.5,
        outbox_depth=0,
        frames_dropped=3,
        rssi_dbm=-71.0,
        power=PowerTelemetry(
            panel_w=0.0,
            battery_v=12.9,
            battery_a=-1.4,
            battery_soc=0.62,
            battery_temp_c=31.0,
            load_w=18.1,
            mains_present=False,
            autonomy_h=9.5,
            policy_step=0,
        ),
    ),
    "event.panic": PanicEvent(node_id=N, ts=ts, event_id=E, seq=1042, button="main", held_ms=850),
    "event.tamper": TamperEvent(
        node_id=N,
        ts=ts,
        event_id=E,
        seq=1042,
        tamper="button_stuck",
        detail="button held for 30.0 s",
    ),
    "event.power": PowerEvent(
        node_id=N,
        ts=ts,
        event_id=E,
        seq=1042,
        power="autonomy_low",
        battery_soc=0.31,
        autonomy_h=4.2,
        policy_step=1,
    ),
    "event.plate": PlateEvent(
        node_id=N,
        ts=ts,
        event_id=E,
        seq=1042,
        camera_id="cam-north",
        track_id="t-5521",
        plate="LEA-1234",
        country="PK",
        confidence=0.93,
        frames=7,
        snapshot_sha256=sha,
    ),
    "event.face": FaceEvent(
        node_id=N,
        ts=ts,
        event_id=E,
        seq=1042,
        camera_id="cam-north",
        track_id="t-5522",
        frames=5,
        quality=0.81,
        score=0.88,
        watchlist_id="missing-persons",
        subject_id="MP-2026-0193",
        snapshot_sha256=sha,
    ),
    "event.ota": OtaEvent(
        node_id=N,
        ts=ts,
        event_id=E,
        seq=1042,
        artifact="agent",
        version="0.2.0",
        phase="healthy",
        campaign_id="nov-agent-rollout",
    ),
    "event.node_fault": NodeFaultEvent(
        node_id=N,
        ts=ts,
        event_id=E,
        seq=1042,
        component="camera",
        code="no_frames",
        detail="no frames for 30 s from cam-north",
    ),
    "cmd.ping": PingCommand(node_id=N, ts=ts, request_id=R),
    "cmd.set_config": SetConfigCommand(
        node_id=N,
        ts=ts,
        request_id=R,
        changes={"telemetry.interval_s": 60, "panic.hold_to_confirm_ms": 500},
    ),
    "cmd.test_mode": TestModeCommand(node_id=N, ts=ts, request_id=R, enabled=True, duration_s=900),
    "cmd.alert_state": AlertStateCommand(
        node_id=N, ts=ts, request_id=R, alert_id="01JD0Q5Z8M3K7T2W9X4Y6V1R0P", state="acknowledged"
    ),
    "reply": Reply(
        node_id=N, ts=ts, request_id=R, ok=True, result={"uptime_s": 86400.5, "outbox_depth": 0}
    ),
    "ack": Ack(node_id=N, ts=ts, event_ids=[E]),
}
for name, m in msgs.items():
    (GOLDEN_DIR / f"{name}.json").write_bytes(encode(m) + b"\n")
print(len(msgs))
