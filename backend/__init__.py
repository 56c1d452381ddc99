"""andon without a screen: configuration, the deploy log, git history, running commands.

Nothing in this package imports Textual or ``tui`` (a test enforces it).
"""

ANDON_VERSION = "0.2.0"  # the same as pyproject.toml's (a test checks); named in the log's compatibility rule


class AndonError(Exception):
    """An error with a one-line message meant for the person at the terminal."""
