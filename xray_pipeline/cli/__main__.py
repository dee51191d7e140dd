"""`python -m xray_pipeline.cli`: the same command (the sidecar is started this way)."""

from xray_pipeline.cli import main

main()
