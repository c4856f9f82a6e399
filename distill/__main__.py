"""`python -m distill`. A Ctrl-C or a SIGTERM that comes while distill is still being imported (the first ~0.3 s,
before the CLI handles them) ends the run as one during the run does: one line, exit status 130 (143), no
traceback."""

import signal
import sys


class _TerminatedWhileStarting(BaseException):
    """SIGTERM before the CLI installs its own handler (nothing is written yet)."""


def _terminated_while_starting(signum: int, frame: object) -> None:
    raise _TerminatedWhileStarting()


signal.signal(signal.SIGTERM, _terminated_while_starting)
try:
    if __name__ == "__main__":
        # Before the imports below (~0.6 s): a large run's workers' fork server imports distill beside them.
        from distill.fork_server import start_early

        start_early(sys.argv[1:])
    from distill.cli import main
except KeyboardInterrupt:
    print("distill: error: interrupted", file=sys.stderr)
    sys.exit(130)
except _TerminatedWhileStarting:
    print("distill: error: terminated", file=sys.stderr)
    sys.exit(128 + signal.SIGTERM)

if __name__ == "__main__":
    main()
