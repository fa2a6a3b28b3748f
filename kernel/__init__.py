"""leasecron kernel: schedules in a table, row leases, HTTP fires; workflows, kept in the same
store when given one. Import from here."""

from .clock import AlignedClock, Clock, SimClock, SystemClock
from .cron import CronExpr, load_timezone
from .errors import (
    LeasecronError,
    ScheduleExistsError,
    ScheduleNotFoundError,
    StoreError,
    ValidationError,
)
from .http.dispatch import Dispatcher, HttpDispatcher
from .manager import ScheduleManager
from .model import Fire, Outcome, Schedule, ScheduleRun
from .scheduler import Scheduler
from .sqlite import SqliteStore
from .store import Claim, FinishPlan, StartPlan, Store, WorkflowStore
from .tools import SchedulerTools
from .workflow.cel import CelEvaluationError, CelNotInstalledError, cel_available
from .workflow.engine import Workflow
from .workflow.flow import Condition, Loop, Router
from .workflow.sessions import TraceNode, WorkflowSession
from .workflow.steps import Parallel, Step, Steps, StepTimeoutError
from .workflow.trace import Span, SpanRecorder, Tracer
from .workflow.types import Media, RunStatus, StepInput, StepOutput, WorkflowRunOutput

__all__ = [
    "AlignedClock",
    "CelEvaluationError",
    "CelNotInstalledError",
    "Claim",
    "Clock",
    "Condition",
    "CronExpr",
    "Dispatcher",
    "FinishPlan",
    "Fire",
    "HttpDispatcher",
    "LeasecronError",
    "Loop",
    "Media",
    "Outcome",
    "Parallel",
    "Router",
    "RunStatus",
    "Schedule",
    "ScheduleExistsError",
    "ScheduleManager",
    "ScheduleNotFoundError",
    "ScheduleRun",
    "Scheduler",
    "SchedulerTools",
    "SimClock",
    "Span",
    "SpanRecorder",
    "SqliteStore",
    "StartPlan",
    "Step",
    "StepInput",
    "StepOutput",
    "StepTimeoutError",
    "Steps",
    "Store",
    "StoreError",
    "SystemClock",
    "TraceNode",
    "Tracer",
    "ValidationError",
    "Workflow",
    "WorkflowRunOutput",
    "WorkflowSession",
    "WorkflowStore",
    "cel_available",
    "load_timezone",
]
