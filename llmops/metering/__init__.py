"""Metering: incremental usage rollups, actions, plans and the data-quality gate."""
