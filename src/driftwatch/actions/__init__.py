"""Runbook actions with guardrails, and the hash-chained audit trail they write ahead of every call.

The pure :class:`~driftwatch.actions.planner.ActionPlanner` decides (time
passed in); :class:`driftwatch.daemon.actions.ActionRunner` consumes the
alerts topic, calls the targets and audits every outcome.
"""

from __future__ import annotations

from driftwatch.actions.audit import AuditError, AuditLog, AuditReport, verify
from driftwatch.actions.planner import (
    ActionConflictError,
    ActionError,
    ActionNotFoundError,
    ActionPlanner,
    Execution,
    Outcome,
    Request,
    action_id,
)

__all__ = [
    "ActionConflictError",
    "ActionError",
    "ActionNotFoundError",
    "ActionPlanner",
    "AuditError",
    "AuditLog",
    "AuditReport",
    "Execution",
    "Outcome",
    "Request",
    "action_id",
    "verify",
]
