"""The long-running commands' processes: the supervisor of `up` and `demo`, the demo's writers,
signals."""
