"""Exporters: driftwatch's live state in other systems' formats (Prometheus: :mod:`driftwatch.exporters.prometheus`)."""

from __future__ import annotations
