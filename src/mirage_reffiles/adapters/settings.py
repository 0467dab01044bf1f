"""Reading the user's settings the way they write them."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from pathlib import Path

from mirage_reffiles.errors import UsageError

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


def check_config(config: Mapping, schema: Mapping) -> dict:
    """``config`` checked against ``schema``, with yes/no words read and defaults filled in.

    Raises :class:`UsageError` naming the first bad key and what it may be:
    the nearest valid key for a misspelt one, the choices for a bad value,
    the range for a number out of it (inf and nan are out of every range).

    >>> check_config({"sigle_dark": True}, {"properties": {"single_dark": {"type": "boolean"}}})
    Traceback (most recent call last):
    ...
    mirage_reffiles.errors.UsageError: unknown setting 'sigle_dark'; did you mean 'single_dark'?
    """
    import jsonschema

    properties = schema.get("properties", {})
    for key in config:
        if key not in properties:
            near = difflib.get_close_matches(key, properties, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}?" if near else f"the settings are: {', '.join(properties)}"
            raise UsageError(f"unknown setting {key!r}; {hint}")
    checked = {key: spec["default"] for key, spec in properties.items() if "default" in spec}
    checked.update(coerce_flags(config, schema))
    # JSON Schema lets inf and nan through any range (nan compares false to every bound): no number here is either.
    infinite = [key for key, value in checked.items() if isinstance(value, float) and not math.isfinite(value)]
    error = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(checked))
    if infinite or error is not None:
        key = infinite[0] if infinite else error.absolute_path[0] if error.absolute_path else "?"
        spec = properties.get(key, {})
        value = checked.get(key)
        if "enum" in spec:
            problem = f"{value!r} is not one of {', '.join(map(str, spec['enum']))}"
        elif spec.get("type") == "boolean":
            problem = f"{value!r} is not true or false"
        elif key in infinite or (error.validator != "type" and isinstance(value, int | float)):
            problem = f"{value!r} is out of range; it must be {allowed(spec)}"
        else:
            problem = error.message
        raise UsageError(f"setting {key!r}: {problem} ({spec.get('description', '').strip()})")
    return checked


def allowed(spec: Mapping) -> str:
    """The numbers a schema entry allows, in words.

    >>> allowed({"anyOf": [{"const": 0}, {"minimum": 1, "maximum": 4096}]})
    '0, or at least 1 and at most 4096'
    """
    if "anyOf" in spec:
        return ", or ".join(allowed(choice) for choice in spec["anyOf"])
    if "const" in spec:
        return f"{spec['const']!r}"
    words = {"minimum": "at least", "exclusiveMinimum": "more than", "maximum": "at most"}
    bounds = [f"{word} {spec[key]:g}" for key, word in words.items() if key in spec]
    kind = "a whole number" if spec.get("type") == "integer" else "a finite number"
    return " and ".join(bounds) if bounds else kind


def check_mirage_data(location: str) -> Path:
    """The tree to build, as an absolute path; :class:`UsageError` if it cannot be one.

    >>> check_mirage_data("/data/{name}")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mirage_reffiles.errors.UsageError: MIRAGE_DATA '/data/{name}' contains '{' or '}', which Snakemake reads ...
    """
    path = Path(location).expanduser().absolute()
    if "{" in str(path) or "}" in str(path):
        raise UsageError(
            f"MIRAGE_DATA '{path}' contains '{{' or '}}', which Snakemake reads as wildcards; "
            "choose a folder without them"
        )
    if path.exists() and not path.is_dir():
        raise UsageError(
            f"MIRAGE_DATA '{path}' is a file, not a folder; point mirage_data (or $MIRAGE_DATA) at a folder"
        )
    return path
