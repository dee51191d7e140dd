"""The sensor's tail decision, pure: keep a live tail run, fail a silent one, start one for
today only when today has bytes, none follows it and none failed lately."""

import pytest

from xray_pipeline.core.ingest.tailing import TailRun, decide_tail

NOW = 10_000.0
TODAY = "2026-12-07"


def decide(runs, *, has_bytes=True, failed_lately=False):
    asked = []

    def failed() -> bool:
        asked.append(True)
        return failed_lately

    decision = decide_tail(
        runs, today=TODAY, today_has_bytes=has_bytes, failed_lately=failed, now=NOW,
        stale_after=60,
    )  # fmt: skip
    return decision, bool(asked)


def test_a_live_tail_run_is_kept_and_none_is_started():
    decision, asked = decide([TailRun("r1", TODAY, True, NOW - 5)])
    assert decision.followed == {TODAY} and not decision.start and not decision.dead
    assert not asked  # no query for failures while one follows the day


def test_a_silent_started_run_is_dead_and_its_day_goes_to_ordinary_runs_for_now():
    run = TailRun("r1", TODAY, True, NOW - 61)
    decision, _ = decide([run])
    assert [r for r, _ in decision.dead] == [run]
    assert "no heartbeat for 61 s" in decision.dead[0][1]
    assert not decision.start and decision.followed == set()


def test_a_queued_run_is_not_judged_by_its_heartbeat():
    decision, _ = decide([TailRun("r1", TODAY, False, NOW - 600)])
    assert not decision.dead and not decision.start and decision.followed == {TODAY}


@pytest.mark.parametrize(("has_bytes", "failed_lately", "start"), [
    (True, False, True), (False, False, False), (True, True, False),
])  # fmt: skip
def test_start_needs_new_bytes_and_no_recent_failure(has_bytes, failed_lately, start):
    decision, _ = decide([], has_bytes=has_bytes, failed_lately=failed_lately)
    assert decision.start is start
    assert decision.followed == ({TODAY} if start else set())


def test_yesterdays_run_follows_its_own_day_only():
    decision, _ = decide([TailRun("r0", "2026-12-06", True, NOW - 1)])
    assert decision.followed == {"2026-12-06", TODAY} and decision.start
