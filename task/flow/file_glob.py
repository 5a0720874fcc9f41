"""File globs as ``files=`` rules write them, matched against a file's whole path.

Go's flowlord matches with ``filepath.Match``, where ``*`` never crosses ``/``; that stays,
and ``**`` is added so one rule can cover a tree of dated folders (``gs://b/**/*.gz``).
"""

from __future__ import annotations

import re

__all__ = ["glob_regex"]


def glob_regex(pattern: str) -> re.Pattern[str]:
    """The regular expression a ``files=`` glob means: ``*`` and ``?`` stay within one path
    part (as Go's ``filepath.Match``), ``**`` crosses ``/`` (``a/**/b`` matches ``a/b`` too),
    ``[abc]``/``[!abc]`` are classes, ``\\`` escapes.

    Raises:
        ValueError: an unclosed ``[``.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^") else i + 1)
            if end < 0:
                raise ValueError(f"'[' at position {i + 1} is never closed")
            body = pattern[i + 1 : end]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)
