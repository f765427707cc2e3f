"""User-facing errors: one clear sentence, printed without a traceback by the CLIs."""


class DeeprecError(Exception):
    """A mistake in the user's input, data or configuration (not a bug in deeprec); the CLIs exit with exit_code."""

    exit_code = 2


class DataError(DeeprecError):
    """A whole-input problem: a missing column, an empty file, an unparseable line."""


class ConfigError(DeeprecError):
    """A configuration value or key that is not valid."""


class CheckpointError(DeeprecError):
    """A checkpoint that is missing, truncated, of another model, or unsafe to load."""


class TrainingInterrupted(DeeprecError):
    """Training stopped by SIGTERM (a scheduler's stop) after writing last.ckpt; exit status 143."""

    exit_code = 143
