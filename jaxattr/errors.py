"""Errors a user can cause. The CLI prints them as one line; library callers can catch them."""


class UserError(ValueError):
    """Bad input, config, file or checkpoint: the message says what is wrong and what to do."""
