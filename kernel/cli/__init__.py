"""The `leasecron` command (`main.py`: dispatch and exit codes; `parser.py`; `inputs.py`: what
the user typed; `schedules.py`: the commands on the schedule table; `replica.py`: `run`;
`logs.py`; `progress.py`), its self-contained demo (`demo.py`), `leasecron sim` (`simulate.py`,
imported only when it runs, so a copy without sim/ keeps every other command), `leasecron serve`
(`serve_command.py`; `serve.py`: an ASGI app found by name, served by the `leasecron.servers`
entry point) and signal handling (`process.py`).
Imports anything in the kernel; nothing in the kernel imports this folder.
"""

from .main import main

__all__ = ["main"]
