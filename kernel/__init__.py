"""leasecron kernel: schedules in a table, row leases, HTTP fires; workflows, kept in the same
store when given one. Import from here.

The workflow names are exported when this copy of the kernel carries workflow/ (parts.py); a
vendored copy without it is the scheduler alone."""

from .clock import AlignedClock, Clock, SimClock, SystemClock
from .cron import CronExpr, load_timezone
from .errors import (
    LeasecronError,
    ScheduleExistsError,
    ScheduleNotFoundError,
    StoreError,
    ValidationError,
)
from .http import Dispatcher, HttpDispatcher
from .manager import ScheduleManager
from .model import Fire, Outcome, Schedule, ScheduleRun
from .parts import WORKFLOW
from .scheduler import Scheduler
from .sqlite import SqliteStore
from .store import Claim, FinishPlan, LeaseStore, LostRun, ScheduleStore, StartPlan, Store
from .tools import SchedulerTools

__all__ = [
    "AlignedClock",
    "Claim",
    "Clock",
    "CronExpr",
    "Dispatcher",
    "FinishPlan",
    "Fire",
    "HttpDispatcher",
    "LeaseStore",
    "LeasecronError",
    "LostRun",
    "Outcome",
    "Schedule",
    "ScheduleExistsError",
    "ScheduleManager",
    "ScheduleNotFoundError",
    "ScheduleRun",
    "ScheduleStore",
    "Scheduler",
    "SchedulerTools",
    "SimClock",
    "SqliteStore",
    "StartPlan",
    "Store",
    "StoreError",
    "SystemClock",
    "ValidationError",
    "load_timezone",
]

if WORKFLOW:
    from .workflow.calls import StepTimeoutError
    from .workflow.cel import CelEvaluationError, CelNotInstalledError, cel_available
    from .workflow.engine import Workflow
    from .workflow.flow import Condition, Loop, Router
    from .workflow.sessions import TraceNode, WorkflowSession
    from .workflow.steps import Parallel, Step, Steps
    from .workflow.store import WorkflowStore
    from .workflow.trace import Span, SpanRecorder, Tracer
    from .workflow.types import Media, RunStatus, StepInput, StepOutput, WorkflowRunOutput

    __all__ += [
        "CelEvaluationError",
        "CelNotInstalledError",
        "Condition",
        "Loop",
        "Media",
        "Parallel",
        "Router",
        "RunStatus",
        "Span",
        "SpanRecorder",
        "Step",
        "StepInput",
        "StepOutput",
        "StepTimeoutError",
        "Steps",
        "TraceNode",
        "Tracer",
        "Workflow",
        "WorkflowRunOutput",
        "WorkflowSession",
        "WorkflowStore",
        "cel_available",
    ]
