"""Symbol normalisation, shared by models, services and the replay command.

A symbol is stored upper-case and trimmed so that `mnq`, ` MNQ ` and `MNQ`
are one position, never three. Anything else than letters, digits and the
few separators futures roots use is refused with a clear error.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9._/:-]{0,31}$")


def normalise_symbol(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValidationError(f"symbol must be text, got {type(raw).__name__}")
    symbol = raw.strip().upper()
    if not _SYMBOL.match(symbol):
        raise ValidationError(f"invalid symbol {raw!r}: use 1-32 letters, digits or ._/:-")
    return symbol
