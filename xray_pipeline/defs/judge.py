"""Judging a load's rows against the abuse rules, as the runs that load do it."""

import dagster as dg
import psycopg

from xray_pipeline.core.ingest.stats import RunStats
from xray_pipeline.core.rules.evaluate import Candidates, Evaluation, evaluate_loaded
from xray_pipeline.defs.resources import RulesResource


def judge_load(
    conn: psycopg.Connection,
    rules: RulesResource,
    loaded: list[RunStats],
    candidates: Candidates | None = None,
) -> Evaluation | None:
    """The rules over the rows that `loaded` added (None: rules off or no rows); a long run
    passes its `candidates` (core.evaluate.Candidates)."""
    if not rules.evaluate:
        return None
    return evaluate_loaded(conn, loaded, rules.config(), candidates)


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
        "evaluated_rows": evaluation.judged,
        "rows_read": evaluation.rows,
        "evaluations": evaluations,
        "evaluation_seconds": round(evaluation.seconds, 3),
        "opened": len(recorded.opened),
        "updated": len(set(recorded.updated)),
        "escalated": len(recorded.escalated),
        "closed": len(recorded.closed),
    }
