"""Fires as HTTP calls: the `Dispatcher` protocol, `HttpDispatcher` (`dispatch.py`) and the lean
HTTP/1.1 transport it uses by default (`http11.py`).
Imports the lease core's values (model, clock, errors, spec) only; never a store or the scheduler.
"""

from .dispatch import Dispatcher, HttpDispatcher

__all__ = ["Dispatcher", "HttpDispatcher"]
