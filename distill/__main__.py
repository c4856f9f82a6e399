"""`python -m distill`. A Ctrl-C that comes while distill is still being imported (the first ~0.3 s, before the CLI
handles it) ends the run as one during the run does: one line, exit status 130, no traceback."""

import sys

try:
    from distill.cli import main
except KeyboardInterrupt:
    print("distill: error: interrupted", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    main()
