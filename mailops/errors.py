"""Errors that reach the operator as one line, never as a traceback."""


class MailopsError(Exception):
    """An error whose message is complete: what failed, where, and how to fix it."""


class PrerequisiteMissing(MailopsError):
    """The machine lacks something mailops needs (a command, root, a kernel feature)."""
