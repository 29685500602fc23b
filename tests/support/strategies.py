"""Hypothesis strategies producing every valid message kind."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import strategies as st

from proto import messages as m

ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

node_ids = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{2,20}\Z")
names = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,20}\Z")
ulids = st.tuples(st.sampled_from("01234567"), st.text(CROCKFORD, min_size=25, max_size=25)).map(
    "".join
)
timestamps = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(timezone.utc)
)
fractions = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
sha = st.text("0123456789abcdef", min_size=64, max_size=64)
texts = st.text(max_size=120)
seqs = st.integers(min_value=0, max_value=2**63 - 1)


def _opt(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.none() | strategy


def _floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)


common = {"node_id": node_ids, "ts": timestamps}
event_common = {**common, "event_id": ulids, "seq": seqs}
cmd_common = {**common, "request_id": ulids, "expires_at": _opt(timestamps)}

power = st.builds(
    m.PowerTelemetry,
    panel_w=_opt(_floats(0, 10_000)),
    battery_v=_opt(_floats(0, 100)),
    battery_a=_opt(_floats(-500, 500)),
    battery_soc=_opt(fractions),
    battery_temp_c=_opt(_floats(-60, 150)),
    load_w=_opt(_floats(0, 10_000)),
    mains_present=_opt(st.booleans()),
    autonomy_h=_opt(_floats(0, 10_000)),
    policy_step=_opt(st.integers(0, 16)),
)

json_scalars = st.none() | st.booleans() | st.integers() | _floats(-1e12, 1e12) | texts
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)

MESSAGES: dict[str, st.SearchStrategy[m.WireModel]] = {
    "status": st.builds(
        m.Status, **common, state=st.sampled_from(["online", "offline"]), bd_seq=seqs
    ),
    "birth": st.builds(
        m.Birth,
        **common,
        bd_seq=seqs,
        serial=st.text(min_size=1, max_size=64),
        hardware=texts,
        firmware=st.builds(
            m.Firmware,
            version=st.text(min_size=1, max_size=64),
            slot=_opt(st.sampled_from(["a", "b"])),
            build=_opt(texts),
        ),
        capabilities=st.lists(st.sampled_from(list(m.Capability)), max_size=8),
        config_hash=sha,
        site_id=_opt(names),
        district=_opt(names),
        location=_opt(st.builds(m.GeoPoint, lat=_floats(-90, 90), lon=_floats(-180, 180))),
        last_seq=seqs,
    ),
    "telemetry": st.builds(
        m.Telemetry,
        **common,
        uptime_s=_floats(0, 1e9),
        cpu_percent=_opt(_floats(0, 100)),
        mem_percent=_opt(_floats(0, 100)),
        disk_free_mb=_opt(_floats(0, 1e9)),
        temperature_c=_opt(_floats(-60, 150)),
        outbox_depth=st.integers(0, 10**9),
        frames_dropped=_opt(st.integers(0, 10**9)),
        rssi_dbm=_opt(_floats(-200, 0)),
        test_mode=st.booleans(),
        power=_opt(power),
        watchlists=_opt(st.dictionaries(names, st.integers(1, 2**40), max_size=4)),
    ),
    "event.panic": st.builds(
        m.PanicEvent,
        **event_common,
        button=names,
        held_ms=st.integers(0, 3_600_000),
        test=st.booleans(),
    ),
    "event.tamper": st.builds(
        m.TamperEvent,
        **event_common,
        tamper=st.sampled_from(["enclosure_open", "button_stuck", "camera_blocked"]),
        active=st.booleans(),
        detail=_opt(st.text(max_size=1000)),
    ),
    "event.power": st.builds(
        m.PowerEvent,
        **event_common,
        power=st.sampled_from(["mains_lost", "autonomy_low", "policy_step", "battery_fault"]),
        battery_soc=_opt(fractions),
        autonomy_h=_opt(_floats(0, 10_000)),
        policy_step=_opt(st.integers(0, 16)),
        detail=_opt(texts),
    ),
    "event.plate": st.builds(
        m.PlateEvent,
        **event_common,
        camera_id=names,
        track_id=st.text(min_size=1, max_size=64),
        plate=st.from_regex(r"\A[A-Z0-9][A-Z0-9 -]{0,15}\Z"),
        country=st.from_regex(r"\A[A-Z]{2}\Z"),
        confidence=fractions,
        frames=st.integers(1, 10_000),
        watchlist_id=_opt(names),
        watchlist_entry=_opt(texts),
        snapshot_sha256=_opt(sha),
    ),
    "event.face": st.builds(
        m.FaceEvent,
        **event_common,
        camera_id=names,
        track_id=st.text(min_size=1, max_size=64),
        frames=st.integers(1, 10_000),
        quality=fractions,
        score=fractions,
        watchlist_id=names,
        subject_id=texts,
        snapshot_sha256=_opt(sha),
    ),
    "event.ota": st.builds(
        m.OtaEvent,
        **event_common,
        artifact=names,
        version=st.text(min_size=1, max_size=64),
        phase=st.sampled_from(["downloading", "verified", "healthy", "rolled_back"]),
        campaign_id=_opt(names),
        detail=_opt(texts),
        artifact_kind=_opt(st.sampled_from(["app", "model", "config", "os"])),
        reason=_opt(names),
        bytes_done=_opt(st.integers(0, 2**40)),
        bytes_total=_opt(st.integers(0, 2**40)),
    ),
    "event.node_fault": st.builds(
        m.NodeFaultEvent,
        **event_common,
        component=names,
        code=names,
        active=st.booleans(),
        detail=_opt(texts),
    ),
    "event.watchlist_hit": st.builds(
        m.WatchlistHitEvent,
        **event_common,
        watchlist_id=names,
        watchlist_version=st.integers(1, 2**63 - 1),
        entry_id=names,
        subject=st.sampled_from(["plate", "person"]),
        match=st.sampled_from(["exact", "confusable"]),
        camera_id=names,
        track_id=st.text(min_size=1, max_size=64),
        plate=_opt(st.from_regex(r"\A[A-Z0-9]{1,16}\Z")),
        listed=_opt(st.from_regex(r"\A[A-Z0-9]{1,16}\Z")),
        confidence=fractions,
        frames=st.integers(1, 10_000),
        source_event_id=_opt(ulids),
        snapshot_sha256=_opt(sha),
    ),
    "cmd.ping": st.builds(m.PingCommand, **cmd_common),
    "cmd.set_config": st.builds(
        m.SetConfigCommand,
        **cmd_common,
        changes=st.dictionaries(
            st.text(min_size=1, max_size=30),
            st.booleans() | st.integers() | _floats(-1e9, 1e9) | texts,
            min_size=1,
            max_size=8,
        ),
    ),
    "cmd.test_mode": st.builds(
        m.TestModeCommand, **cmd_common, enabled=st.booleans(), duration_s=st.integers(1, 86_400)
    ),
    "cmd.alert_state": st.builds(
        m.AlertStateCommand,
        **cmd_common,
        alert_id=st.text(min_size=1, max_size=64),
        state=st.sampled_from(["acknowledged", "dispatched", "resolved", "false_alarm"]),
    ),
    "cmd.ota_check": st.builds(
        m.OtaCheckCommand,
        **cmd_common,
        campaign_id=_opt(names),
        group=_opt(names),
        artifact_kind=_opt(st.sampled_from(["app", "model", "config", "os"])),
        version=_opt(st.text(min_size=1, max_size=64)),
    ),
    "cmd.watchlist": st.builds(
        m.WatchlistCommand, **cmd_common, bundle=st.text(min_size=2, max_size=200)
    ),
    "cmd.snapshot": st.builds(
        m.SnapshotCommand,
        **cmd_common,
        alert_id=_opt(st.text(min_size=1, max_size=64)),
        cameras=_opt(st.lists(names, max_size=8)),
        reason=st.sampled_from(["panic", "operator"]),
    ),
    "reply": st.builds(
        m.Reply,
        **common,
        request_id=ulids,
        ok=st.booleans(),
        result=_opt(st.dictionaries(st.text(max_size=10), json_values, max_size=5)),
        error=_opt(texts),
    ),
    "ack": st.builds(m.Ack, **common, event_ids=st.lists(ulids, min_size=1, max_size=20)),
}
