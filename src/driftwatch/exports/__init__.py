"""Monitoring as code: Grafana dashboards, Prometheus rules and an Alertmanager route, generated from a config.

Pure functions from a :class:`~driftwatch.config.Config` to documents; ``driftwatch export`` writes them.
"""
