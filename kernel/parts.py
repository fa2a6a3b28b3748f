"""The kernel's optional folders. `workflow/` and `sim/` may be deleted from a vendored copy: the
lease core, sqlite/, http/ and observe/ never import them (cli/ imports sim/ only when its `sim`
command runs, and says so when it is gone), and the two places that offer workflows (this package's
exports and `SqliteStore`) ask here whether the folder is there. A folder that is there but broken
still raises its ImportError.
"""

from __future__ import annotations

from importlib.util import find_spec


def present(folder: str) -> bool:
    """Whether this copy of the kernel carries the subpackage `folder`."""
    return find_spec(f"{__package__}.{folder}") is not None


WORKFLOW = present("workflow")
