"""Exceptions of the kernel. Errors name the field, the value and the rule, so they teach."""

from __future__ import annotations


class LeasecronError(Exception):
    """Base class of every error the kernel raises on purpose."""


class ValidationError(LeasecronError, ValueError):
    """Bad input: `field` names what was wrong, the message says the rule."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class ScheduleExistsError(LeasecronError):
    """A schedule with this name already exists (create with if_exists="raise")."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(f"name: a schedule named {name!r} already exists")


class ScheduleNotFoundError(LeasecronError, LookupError):
    """No schedule with this id or name."""

    def __init__(self, key: str):
        self.key = key
        super().__init__(f"schedule {key!r} not found")


class StoreError(LeasecronError):
    """A storage operation failed; `operation` names it. Raised once, at the store boundary."""

    def __init__(self, operation: str, cause: BaseException):
        self.operation = operation
        super().__init__(f"store.{operation} failed: {cause}")
        self.__cause__ = cause
