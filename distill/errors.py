"""Errors a user can act on: printed as one line each, never as a traceback."""


class DistillError(Exception):
    """A problem with the user's config or inputs; the message says what and where."""


class ConfigError(DistillError):
    """One or more config values are wrong; each message starts with the dotted override key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))

    def __reduce__(self) -> tuple[type, tuple[list[str]]]:
        # Crosses processes (a Ray task's error) with its problems, not with its joined message.
        return (type(self), (self.problems,))
