"""Jobs: the sensor's load job runs in process (one process per run is cost enough)."""

import dagster as dg


def build_load_logs_job():
    return dg.define_asset_job(
        name="load_logs_job",
        selection=dg.AssetSelection.assets("logs").without_checks(),
        executor_def=dg.in_process_executor,
        description="Load the new byte ranges of a day into `logs` (run by access_log_sensor).",
    )


def build_check_job():
    return dg.define_asset_job(
        name="check_logs_job",
        selection=dg.AssetSelection.checks_for_assets("logs", "incidents"),
        executor_def=dg.in_process_executor,
        description=(
            "The data-quality checks of `logs` for one day (config `day`, default today), and "
            "those of `incidents`."
        ),
    )
