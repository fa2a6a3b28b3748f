"""The AgentOS server (the `server` extra: FastAPI, uvicorn, python-multipart).

One FastAPI process serves agents, teams and workflows at `/agents|teams|workflows/<id>/runs`,
keeps schedules in the same store, runs the kernel's Scheduler in its lifespan and fires due
schedules through its own routes, with the same token an external caller sends.

    agent_os = AgentOS(db="leasecron.db", agents=[echo], workflows=[blog])
    app = agent_os.get_app()

Files: `app.py` (AgentOS: the store, the lifespan, the scheduler), `context.py` (what every
route shares: the token check, the caller's user, kernel errors as HTTP errors), `runs.py`
(run routes, sessions, traces), `schedules.py` (the schedule routes), `schedule_models.py`
(their request and response shapes), `targets.py` (which endpoints a schedule may target),
`dashboard.py` (the operators' page at `/`, its files in `dashboard/`). Built on the kernel's
public API only.
"""

from .app import AgentOS

__all__ = ["AgentOS"]
