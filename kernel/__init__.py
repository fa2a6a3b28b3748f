"""leasecron kernel: schedules in a table, row leases, HTTP fires; workflows, kept in the same
store when given one. Import from here."""

from .cel import CelEvaluationError, CelNotInstalledError, cel_available
from .clock import AlignedClock, Clock, SimClock, SystemClock
from .cron import CronExpr, load_timezone
from .dispatch import Dispatcher, HttpDispatcher
from .errors import (
    LeasecronError,
    ScheduleExistsError,
    ScheduleNotFoundError,
    StoreError,
    ValidationError,
)
from .manager import ScheduleManager
from .model import Fire, Outcome, Schedule, ScheduleRun
from .scheduler import Scheduler
from .sessions import TraceNode, WorkflowSession
from .sqlite import SqliteStore
from .store import Claim, FinishPlan, StartPlan, Store, WorkflowStore
from .tools import SchedulerTools
from .trace import Span, SpanRecorder, Tracer
from .workflow import Workflow
from .workflow_flow import Condition, Loop, Router
from .workflow_steps import Parallel, Step, Steps, StepTimeoutError
from .workflow_types import Media, RunStatus, StepInput, StepOutput, WorkflowRunOutput

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
