"""OS errors (permission, read-only, not a folder, no space) as one line that names the
operation and the path, and says what to do: `os_error_message`, `os_errors`.

The CLI's error boundary uses the same words for OS errors raised outside the tables' code.
"""

from __future__ import annotations

import contextlib
import errno
import re

from latprof.errors import LatprofError
from latprof.tables.meta import short

_ERRNO_WORDS = {
    errno.EACCES: ("permission denied", "choose a place you may write to, or change its permissions"),
    errno.EPERM: ("operation not permitted", "choose a place you may write to, or change its permissions"),
    errno.EROFS: ("the file system is read-only", "choose a writable place"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another path"),
    errno.EISDIR: ("it is a folder", "give a file name"),
    errno.EEXIST: ("a file of that name is in the way", "choose another path"),
    errno.ENOSPC: ("no space left on the device", "free some space and run the command again (finished rows "
                   "of a sweep are kept and resume)"),
    errno.EDQUOT: ("disk quota exceeded", "free some space and run the command again"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter path"),
    errno.EMFILE: ("too many open files", "raise the limit (`ulimit -n`) and run the command again"),
}


def os_errno(exc: OSError) -> int | None:
    """`exc.errno`, or the errno in the text of errors that lack it (Arrow's: "[errno 28] ...")."""
    if exc.errno is not None:
        return exc.errno
    found = re.search(r"errno (\d+)", str(exc), re.IGNORECASE)
    return int(found.group(1)) if found else None


def os_error_message(exc: OSError, operation: str, path=None) -> str:
    """One line: what could not be done to which path, why (errno-based), and what to do."""
    where = path if path is not None else (exc.filename or "a file")
    code = os_errno(exc)
    reason, fix = _ERRNO_WORDS.get(code, (exc.strerror or short(exc), "check the path and run the command again"))
    other = f" (at {exc.filename})" if exc.filename and path is not None and str(exc.filename) != str(path) else ""
    return f"cannot {operation} {where}{other}: {reason}; {fix}"


@contextlib.contextmanager
def os_errors(operation: str, path):
    """OS errors in the block become a `LatprofError` that names `operation` and `path`."""
    try:
        yield
    except OSError as exc:
        raise LatprofError(os_error_message(exc, operation, path)) from None
