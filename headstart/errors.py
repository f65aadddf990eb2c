"""One exception type per domain. Each message is one line: what is wrong and what to do.

The CLI catches :class:`HeadstartError`, prints its message and exits non-zero; library users can
catch the specific subclasses.
"""


class HeadstartError(Exception):
    """Base class of every error headstart raises on purpose."""


class SpecError(HeadstartError, ValueError):
    """A sub-network spec is illegal for its teacher (indices, counts, sizes)."""


class TeacherError(HeadstartError):
    """A teacher could not be loaded (missing files, unsupported architecture, hub unreachable)."""


class CheckpointError(HeadstartError):
    """A checkpoint on disk is missing, truncated, inconsistent, or would be overwritten."""


class ConfigError(HeadstartError, ValueError):
    """A configuration value or file is invalid."""


class DataError(HeadstartError):
    """Input data is missing, empty, malformed, or belongs to another tokenizer."""


class Interrupted(HeadstartError):
    """A run stopped on a signal after saving what a ``--resume`` continues from."""

    exit_code = 130


class UnsafePathError(DataError):
    """A ``file`` entry of a manifest or cache points outside its directory (absolute path, ``..``)."""


class OutputError(HeadstartError):
    """An output cannot be written where it was asked for (a special file, a link out of ``--out``, a full disk)."""


class OutputLockedError(OutputError):
    """Another process is writing the same output directory (it holds its lock)."""


class DiskFullError(OutputError):
    """The disk (or quota) filled up while an output was written; nothing partial was kept."""
