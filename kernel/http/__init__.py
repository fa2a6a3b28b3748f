"""Fires as HTTP calls: the `Dispatcher` protocol, `HttpDispatcher` (`dispatch.py`: plain requests;
`agentos.py`: the AgentOS run protocol; `reply.py`: replies read, cut and redacted; `validate.py`:
what is refused before sending) and the lean HTTP/1.1 transport it uses by default (`http11.py`).
Imports the lease core's values (model, clock, errors, spec) only; never a store or the scheduler.
"""

from .dispatch import Dispatcher, HttpDispatcher

__all__ = ["Dispatcher", "HttpDispatcher"]
