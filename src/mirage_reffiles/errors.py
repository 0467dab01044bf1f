"""The errors a fetch ends with: each message says what went wrong and where."""


class FetchError(Exception):
    """A download that cannot succeed as it stands; the message says why."""


class UnpackError(FetchError):
    """The archive is corrupt or unsafe; the message names the problem."""


class VerifyError(FetchError):
    """The bytes arrived but fail a check (size, SHA-256): they were discarded."""


class Interrupted(FetchError):
    """The run was asked to stop (Ctrl-C, SIGTERM, SIGHUP); what was fetched is kept for the next run."""
