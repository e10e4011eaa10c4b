"""The version of cbus and of the API generated code is written against.

A leaf module, as psycopg's `version.py`: nothing in cbus imports the package's
`__init__` to read these.
"""

from __future__ import annotations

__all__ = ["API_VERSION", "__version__"]

__version__ = "0.1.0"

API_VERSION = 3
"""The number of `cbus.api`, the surface generated code uses; bumped when generated
code needs something new from it (2: `DEFAULT`; 3: `cbus.api` itself)."""
