"""The base of every error caused by the user's input (config, files, data), not by a bug.

Entry points print these as one line without a traceback and exit non-zero.
"""


class UserError(Exception):
    """Bad input: the message says what is wrong, where, and what to do."""


class ConfigError(UserError):
    """A config value outside its accepted range or choices."""
