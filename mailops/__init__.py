"""mailops: provision, publish and verify Postfix + OpenDKIM sending servers.

The package is a library first: modules under ``mailops`` return data and raise
:class:`mailops.errors.MailopsError` with a one-line, actionable message. The
click front-end lives in :mod:`mailops.cli` and is the only place that prints.
"""

__version__ = "0.1.0"
