"""The replay clock alone: pure arithmetic, no network, no event loop."""

from __future__ import annotations

import random

import pytest

from replayer.pacing import NS, ReplayClock


def _stream(clock: ReplayClock, wall: float, next_ts: int) -> float:
    """What a stream does before sending the event at `next_ts`: anchor if released, then
    return when it is due."""
    if not clock.anchored:
        clock.anchor(wall, next_ts)
    return clock.due(next_ts)


def test_due_and_now_follow_one_anchor() -> None:
    clock = ReplayClock(speed=2.0)
    assert clock.now_ts(5.0) is None  # nothing sent yet, no replay time
    clock.anchor(10.0, 100 * NS)
    assert clock.due(100 * NS) == 10.0
    assert clock.due(104 * NS) == pytest.approx(12.0)
    assert clock.now_ts(11.0) == 102 * NS
    assert clock.lateness(104 * NS, 12.5) == pytest.approx(0.5)
    assert clock.lateness(104 * NS, 11.0) == 0.0


def test_max_speed_never_waits() -> None:
    clock = ReplayClock(speed=None)
    clock.anchor(0.0, 0)
    assert clock.due(10**18) == float("-inf") and clock.lateness(10**18, 99.0) == 0.0


def test_a_number_after_max_paces_from_the_next_event() -> None:
    clock = ReplayClock(speed=None)
    clock.anchor(0.0, 0)
    # At max, 50 s of events left in 1 s of wall time; the next to send is at 50 s.
    clock.set_speed(1.0)
    assert _stream(clock, 1.0, 50 * NS) == 1.0  # due now, not in 49 s
    assert clock.due(51 * NS) == pytest.approx(2.0)


def test_a_speed_change_while_paused_applies_from_the_next_event() -> None:
    clock = ReplayClock(speed=None)
    clock.anchor(0.0, 0)
    clock.pause(1.0)
    clock.set_speed(2.0)
    assert clock.paused
    clock.resume(30.0)
    assert _stream(clock, 30.0, 80 * NS) == 30.0
    assert clock.due(84 * NS) == pytest.approx(32.0)


def test_pause_and_resume_continue_without_a_jump() -> None:
    clock = ReplayClock(speed=1.0)
    clock.anchor(0.0, 0)
    clock.pause(2.0)
    assert clock.now_ts(50.0) == 2 * NS  # frozen while paused
    clock.resume(50.0)
    assert clock.now_ts(50.0) == 2 * NS
    assert clock.due(3 * NS) == pytest.approx(51.0)
    clock.pause(51.0)
    clock.pause(60.0)  # twice is once
    clock.resume(70.0)
    clock.resume(80.0)
    assert clock.now_ts(70.0) == 3 * NS


def test_pause_at_max_resumes_from_the_next_event() -> None:
    clock = ReplayClock(speed=None)
    clock.anchor(0.0, 0)
    clock.pause(1.0)
    clock.resume(2.0)
    clock.set_speed(1.0)
    assert _stream(clock, 2.0, 77 * NS) == 2.0


def test_a_seek_while_paused_anchors_on_resume() -> None:
    clock = ReplayClock(speed=1.0)
    clock.anchor(0.0, 0)
    clock.pause(1.0)
    clock.release()  # seek
    clock.resume(9.0)
    assert not clock.anchored
    assert _stream(clock, 9.5, 500 * NS) == 9.5


def test_no_control_leaves_a_stream_waiting_for_an_event_it_owes() -> None:
    """Over random controls: whenever the clock was released (speed change, pause at max,
    seek), the next event is due at once; otherwise it is due exactly by the anchor."""
    rng = random.Random(5)
    for _ in range(200):
        clock = ReplayClock(speed=rng.choice([None, 0.5, 1.0, 3.0]))
        wall, ts = 0.0, 0
        for _ in range(50):
            action = rng.choice(["send", "send", "send", "speed", "pause", "resume", "seek"])
            if action == "send" and not clock.paused:
                ts += rng.randint(0, 2 * NS)
                was_anchored = clock.anchored
                due = _stream(clock, wall, ts)
                if not was_anchored or clock.speed is None:
                    assert due <= wall
                else:
                    assert due == pytest.approx(clock.wall0 + (ts - clock.ts0)
                                                / (clock.speed * NS))
                wall = max(wall, due)  # sent when due, as the stream does
            elif action == "speed":
                clock.set_speed(rng.choice([None, 0.5, 1.0, 3.0]))
                assert not clock.anchored
            elif action == "pause":
                clock.pause(wall)
            elif action == "resume":
                clock.resume(wall)
            elif action == "seek":
                ts = rng.randint(0, ts + 1)
                clock.release()
            wall += rng.random() * 0.01
