"""What every command-line entry point shares: one-line errors, non-zero exit, no traceback for user errors."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable

from ni.errors import TkError

EXIT_USER_ERROR = 2


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    try:
        return main(argv)
    except TkError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:  # a full disk, an --out that is a directory, a file that cannot be read: one line too
        where = f"{e.filename}: " if e.filename else ""
        name = errno.errorcode.get(e.errno or 0, type(e).__name__)
        print(f"error: {where}{e.strerror or e} ({name})", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
