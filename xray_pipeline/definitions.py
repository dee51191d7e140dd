"""The one place that assembles the Dagster code location."""

import dagster as dg

defs = dg.Definitions()
