"""The `leasecron` command (`main.py`), its self-contained demo (`demo.py`), `leasecron serve`
(`serve.py`: an ASGI app found by name, served by the `leasecron.servers` entry point) and signal
handling (`process.py`).
Imports anything in the kernel; nothing in the kernel imports this folder.
"""

from .main import main

__all__ = ["main"]
