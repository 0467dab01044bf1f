"""Reading the user's settings the way they write them."""

from __future__ import annotations

from collections.abc import Mapping

_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def coerce_flags(config: Mapping, schema: Mapping) -> dict:
    """``config`` with yes/no words turned into booleans where the schema wants one.

    Snakemake's ``--config key=value`` reads only ``True``/``False`` as
    booleans, so ``single_dark=true`` would arrive as text. Anything else is
    left for the schema to reject.

    >>> coerce_flags({"single_dark": "true", "instrument": "all"}, {"properties": {"single_dark": {"type": "boolean"}}})
    {'single_dark': True, 'instrument': 'all'}
    """
    properties = schema.get("properties", {})
    return {
        key: _WORDS.get(value.strip().lower(), value)
        if isinstance(value, str) and properties.get(key, {}).get("type") == "boolean"
        else value
        for key, value in config.items()
    }
