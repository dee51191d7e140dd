"""Synthetic data: the log generator, its live writer, planted abuse and synthetic GeoIP
databases."""
