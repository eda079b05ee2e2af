"""The one exception type a user can cause.

Every failure that comes from the user's input (a missing file, a file that is not
media, a clip with neither speech nor face, ...) is raised as `AvemoError` with a
one-line message; the CLI prints that line and exits non-zero instead of showing a
traceback. Anything else is a bug and keeps its traceback.
"""


class AvemoError(Exception):
    """A problem with the user's input, explained in one line."""
