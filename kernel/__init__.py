"""leasecron kernel: schedules in a table, row leases, HTTP fires. Import from here."""

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
from .sqlite import SqliteStore
from .store import Claim, FinishPlan, StartPlan, Store

__all__ = [
    "AlignedClock",
    "Claim",
    "Clock",
    "CronExpr",
    "Dispatcher",
    "FinishPlan",
    "Fire",
    "HttpDispatcher",
    "LeasecronError",
    "Outcome",
    "Schedule",
    "ScheduleExistsError",
    "ScheduleManager",
    "ScheduleNotFoundError",
    "ScheduleRun",
    "Scheduler",
    "SimClock",
    "SqliteStore",
    "StartPlan",
    "Store",
    "StoreError",
    "SystemClock",
    "ValidationError",
    "load_timezone",
]
