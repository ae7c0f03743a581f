"""One error type for everything a user can get wrong.

The CLI turns a `TPError` into one line on stderr and exit code 2; the app shows it as a friendly message.
Anything else escaping is a bug in TaskPrune, not in the user's input.
"""


class TPError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""
