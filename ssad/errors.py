"""Errors a user can act on. The CLI prints them as one line (no traceback unless --debug)."""


class SsadError(Exception):
    """Base class: a problem with the user's input, files or configuration."""


class ConfigError(SsadError):
    """An unknown key, a bad value or an unreadable config file."""


class BadImageError(SsadError):
    """A file that cannot be read as an image; ``path`` names it."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DataError(SsadError):
    """A data folder that is missing, empty or not laid out as expected."""


class RunDirError(SsadError):
    """A run directory that is missing, incomplete or from an incompatible version."""


class VersionError(RunDirError):
    """A run directory made by an incompatible (another major) version of ssad."""


class OutdatedStatisticsError(RunDirError):
    """Good-image statistics in a form an earlier ssad wrote: to be refitted."""
