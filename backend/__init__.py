"""andon without a screen: configuration, the deploy log, git history, running commands.

Nothing in this package imports Textual or ``tui`` (a test enforces it).
"""


class AndonError(Exception):
    """An error with a one-line message meant for the person at the terminal."""
