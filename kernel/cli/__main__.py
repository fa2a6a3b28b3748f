"""`python -m leasecron.kernel.cli`: the `leasecron` command."""

import sys

from .main import main

sys.exit(main())
