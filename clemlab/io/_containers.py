"""Choosing one image inside a container file (CZI scenes, LIF images, ND2 positions).

The rules every container reader follows:

- a file holding one image opens without a choice;
- a file holding several needs ``scene=`` / ``image=`` (a name or an index); without it,
  or with a name or index that does not exist, the error lists what the file holds;
- axes a clemlab image has no dim for (time) are chosen with ``timepoint=``; a time axis of
  length > 1 without that choice is refused in words, never silently reduced to its first point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ImageError


def listing(entries: Sequence[str]) -> str:
    """``"0: 'a' (...), 1: 'b' (...)"`` for error messages."""
    return "; ".join(f"{i}: {e}" for i, e in enumerate(entries))


def choose(names: Sequence[str], choice: int | str | None, where: str, *, kind: str, keyword: str,
           described: Sequence[str] | None = None) -> int:
    """Index of the chosen image among ``names``.

    Parameters
    ----------
    names : sequence of str
        Names of the images in the file, in file order.
    choice : int or str or None
        An index (negative counts from the end) or a name; None is allowed only for a file
        holding exactly one image.
    where : str
        How messages name the file.
    kind : str
        What the file calls its images ("scene", "image", "position").
    keyword : str
        The argument the user passes (``"scene"`` or ``"image"``).
    described : sequence of str, optional
        One description per image for the listing (default: the quoted names).

    Raises
    ------
    ImageError
        Ambiguous, unknown or out-of-range choice; the message lists what is in the file.
    """
    described = list(described) if described is not None else [repr(n) for n in names]
    n = len(names)
    if n == 0:
        raise ImageError(f"{where} holds no {kind}")
    what = f"It holds {n} {kind}{'s' if n != 1 else ''}: {listing(described)}"
    if choice is None:
        if n == 1:
            return 0
        raise ImageError(
            f"{where} holds {n} {kind}s ({listing(described)}); choose one with {keyword}=<name or index>"
        )
    if isinstance(choice, bool) or not isinstance(choice, (int, str)):
        try:
            import numpy as np

            if isinstance(choice, np.integer):
                choice = int(choice)
            else:
                raise TypeError
        except TypeError:
            raise ImageError(f"{keyword}= must be a name (str) or an index (int), got {choice!r}") from None
    if isinstance(choice, int):
        if -n <= choice < n:
            return choice % n
        raise ImageError(f"{where}: {keyword}={choice} is out of range. {what}")
    matches = [i for i, name in enumerate(names) if name == choice]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ImageError(
            f"{where}: {len(matches)} {kind}s are named {choice!r} (indices {matches}); "
            f"choose one by index. {what}"
        )
    raise ImageError(f"{where} has no {kind} named {choice!r}. {what}")


def pick_timepoint(n_times: int, timepoint: int | None, where: str) -> int:
    """Index of the time point to read (clemlab images have no time dim).

    Raises
    ------
    ImageError
        A time series (``n_times > 1``) without ``timepoint=``, or one out of range.
    """
    if timepoint is None:
        if n_times <= 1:
            return 0
        raise ImageError(
            f"{where} is a time series of {n_times} time points and clemlab images have no time "
            f"dim; choose one with timepoint=<0..{n_times - 1}>"
        )
    if isinstance(timepoint, bool) or not isinstance(timepoint, int):
        raise ImageError(f"timepoint= must be an int, got {timepoint!r}")
    if not -n_times <= timepoint < n_times:
        raise ImageError(f"{where}: timepoint={timepoint} is out of range (the file has {n_times} time points)")
    return timepoint % n_times


def unique_names(names: Sequence[Any], fallback: str) -> list[str]:
    """Channel names as unique strings: empty names become ``f"{fallback}{i}"``, repeats get a suffix."""
    out: list[str] = []
    for i, name in enumerate(names):
        text = str(name).strip() if name is not None else ""
        text = text or f"{fallback}{i}"
        base, k = text, 2
        while text in out:
            text = f"{base} ({k})"
            k += 1
        out.append(text)
    return out
