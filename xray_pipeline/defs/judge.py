"""Judging a load's rows against the abuse rules, as the runs that load do it."""

import dagster as dg
import psycopg

from xray_pipeline.core.evaluate import Evaluation, evaluate
from xray_pipeline.core.stats import RunStats
from xray_pipeline.defs.resources import RulesResource


def judge_load(
    conn: psycopg.Connection, rules: RulesResource, loaded: list[RunStats]
) -> Evaluation | None:
    """The rules over the rows that `loaded` added (None: rules off or no rows)."""
    times = [(s.oldest_ts, s.newest_ts) for s in loaded if s.oldest_ts is not None]
    if not rules.evaluate or not times:
        return None
    lo = min(t[0] for t in times)
    hi = max(t[1] for t in times)
    return evaluate(conn, lo, hi, rules.config())


def incidents_metadata(conn: psycopg.Connection, evaluation: Evaluation, evaluations: int = 1):
    """The metadata of a materialization of `incidents`."""
    by_rule = dict(
        conn.execute(
            "SELECT rule, count(*) FROM incidents WHERE state = 'open' GROUP BY rule"
        ).fetchall()
    )
    conn.commit()
    recorded = evaluation.recorded
    return {
        "open_incidents": sum(by_rule.values()),
        "open_by_rule": dg.MetadataValue.json(by_rule),
        "evaluated_rows": evaluation.rows,
        "evaluations": evaluations,
        "evaluation_seconds": round(evaluation.seconds, 3),
        "opened": len(recorded.opened),
        "updated": len(set(recorded.updated)),
        "escalated": len(recorded.escalated),
        "closed": len(recorded.closed),
    }
