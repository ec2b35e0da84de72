"""Pieter CI: a lightweight private CI server — Sanic API, Redis database, jobs as processes or systemd units."""

import os
import sys

__version__ = "0.2.0"

# The Debian package carries Sanic and the pure-Python packages it needs that Debian lacks here, at pinned
# versions. Appended, not prepended: in a development virtualenv its own Sanic wins.
VENDOR_DIR = "/usr/lib/pieter-ci"
if os.path.isdir(VENDOR_DIR) and VENDOR_DIR not in sys.path:
    sys.path.append(VENDOR_DIR)
