"""Errors that reach the user: each carries its HTTP status; `app.py` renders them as `{"error": ...}`.

No Sanic import here, so the store and the runners can raise them too.
"""


class PieterError(Exception):
    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(PieterError):
    status = 400


class NotFound(PieterError):
    status = 404


class Conflict(PieterError):
    status = 409


class TooLarge(PieterError):
    status = 413
