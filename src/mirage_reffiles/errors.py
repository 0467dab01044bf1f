"""Every error this package raises: each message says what went wrong, where, and what to do."""


class FetchError(Exception):
    """A download that cannot succeed as it stands; the message says why."""


class UnpackError(FetchError):
    """The archive is corrupt or unsafe; the message names the problem."""


class VerifyError(FetchError):
    """The bytes arrived but fail a check (size, SHA-256): they were discarded."""


class Outdated(VerifyError):
    """The bytes are whole but older than the installed software accepts: discarded, and not fetched again."""


class TransientError(FetchError):
    """A failure worth retrying (dropped connection, timeout, stall, 5xx, 429, an answer that is not the file)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after  # seconds the server asked to wait, if it did


class Refused(TransientError):
    """The server refused the connection: retried when it is the only source, not when another may serve."""


class SizeError(RuntimeError):
    """The server would not say how large a file is (``python -m mirage_reffiles.sizes``)."""


class Interrupted(FetchError):
    """The run was asked to stop (Ctrl-C, SIGTERM, SIGHUP); what was fetched is kept for the next run."""


class ServerUnreachable(FetchError):
    """The server cannot be reached at all (refused, unknown host, untrusted certificate): nothing was fetched."""


class UsageError(ValueError):
    """A setting, target or path the user gave is not valid; the message names the valid choices."""


class TableError(UsageError):
    """The table or a selection over it is not valid; the message says how."""


class SpaceError(ValueError):
    """The build would not fit in the free space; the message gives the shortfall."""


class WorkflowNotFound(RuntimeError):
    """The workflow files (Snakefile, rules/, config/) are not where the package expects them."""


class RunRefused(SystemExit):
    """Ends a Snakemake run before any download, with a short message and no traceback.

    Snakemake passes ``SystemExit`` through untouched, so the exit status is
    ``code``; the Python API turns it back into :attr:`error`.
    """

    def __init__(self, error: Exception, code: int):
        super().__init__(code)
        self.error = error


class DamageFound(Exception):
    """``verify`` found files that do not match their records; the message names the repair."""
