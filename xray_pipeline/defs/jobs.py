"""Jobs: the sensor's load job runs in process (one process per run is cost enough)."""

import dagster as dg


def build_load_logs_job():
    return dg.define_asset_job(
        name="load_logs_job",
        selection=dg.AssetSelection.assets("logs"),
        executor_def=dg.in_process_executor,
        description="Load one byte range of an access log into `logs` (run by access_log_sensor).",
    )
