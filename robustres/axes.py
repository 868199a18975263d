"""The value grammar of the sweep axes: what `--h 0.01..2`, `--seeds 5`, `--lr 0.05,0.5`, `--bn on,off`
or `optimizer: [sgd, adam]` list, one grammar for flags and YAML keys.

An axis's syntax comes from the field table (spec.py): h's ranges (`Meta.grid_syntax="range"`), seeds
(a count too), or else a list of the field's type: numbers, whole numbers, switches (on/off) or names.
"""

from __future__ import annotations

import math
import sys

from .errors import SpecError, shown
from .spec import FIELD_TYPES, MAX_RUNS, MAX_SEED, checked_count, meta


def parse_floats(name: str, text: str) -> list[float]:
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(t == "" for t in items):
        raise SpecError(f"{name} must be a comma-separated list of numbers, got {text!r}")
    out = []
    for t in items:
        try:
            out.append(float(t))
        except ValueError:
            raise SpecError(f"{name}: {t!r} is not a number") from None
        if out[-1] == 0 and any(c in "123456789" for c in t.lower().split("e")[0]):
            raise SpecError(f"{name}: {t!r} is too small for a float (it would be 0); write 0 for zero")
    return out


def parse_ints(name: str, text: str, *, allow_empty: bool = False) -> list[int]:
    text = str(text).strip()
    if allow_empty and text in ("", "none"):
        return []
    items = [t.strip() for t in text.split(",")]
    out = []
    for t in items:
        try:
            out.append(int(t))
        except ValueError:
            raise SpecError(f"{name}: {t!r} is not a whole number") from None
    return out


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"{name}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise SpecError(f"{name}: {text!r} is not finite")
    return value


def decade_grid(a: float, b: float) -> list[float]:
    """The 1-2-5 values of every decade from a to b, with a and b themselves always included."""
    values = {a, b}
    for exponent in range(math.floor(math.log10(a)) - 1, math.ceil(math.log10(b)) + 1):
        for mantissa in (1, 2, 5):
            v = float(f"{mantissa}e{exponent}")  # exact decimal, no 0.30000000000000004
            if a <= v <= b:
                values.add(v)
    return sorted(values)


def log_grid(a: float, b: float, n: int) -> list[float]:
    """n log-spaced points from a to b inclusive, rounded to 4 significant digits (ends exact), or to
    as many more (up to 12) as keep the n points distinct."""
    for digits in range(4, 13):
        inner = [float(f"{a * (b / a) ** (i / (n - 1)):.{digits}g}") for i in range(1, n - 1)]
        values = [a, *inner, b]
        if len(set(values)) == n:
            break
    return values


def parse_h_grid(text: str, name: str = "--h", limit: int = MAX_RUNS) -> list[float]:
    """'0.1,0.5,1' (a list), 'A..B' (the decade grid of 1-2-5 steps) or 'A..B:N' (N log-spaced): h's
    grammar, and that of every axis whose syntax is `range` (lr, weight decay); none is negative."""
    text = str(text).strip()
    if ".." not in text:
        values = parse_floats(name, text)
    else:
        bounds, colon, count = text.partition(":")
        lo, _, hi = bounds.partition("..")
        if lo.endswith(".") or hi.startswith(".") or ".." in hi:
            raise SpecError(f"{name}: {shown(text)} is not a range; write A..B or A..B:N (two dots)")
        if colon and not count.strip():
            raise SpecError(f"{name}: nothing after ':' in {shown(text)}; write A..B:N, N the number of points")
        a, b = _number(name, lo.strip()), _number(name, hi.strip())
        if a <= 0 or b <= 0:
            raise SpecError(f"{name}: a range needs A and B > 0 (a log grid), got {text!r}")
        if a >= b:
            raise SpecError(f"{name}: range {text!r} is empty or reversed; write A..B with A < B")
        if count:
            try:
                n = int(count)
            except ValueError:
                raise SpecError(f"{name}: {count!r} after ':' is not a whole number") from None
            if n < 2:
                raise SpecError(f"{name}: a range needs at least 2 points, got {n}")
            if n > limit:
                raise SpecError(f"{name}: {n:,} points is more than a grid may hold ({limit:,} runs; --max-runs N "
                                "allows more)")
            values = log_grid(a, b, n)
            if len(set(values)) < n:
                print(f"warning: {name} {text}: {n - len(set(values)):,} of the {n:,} points coincide at 12 "
                      f"significant digits and merge; the grid has {len(set(values)):,}", file=sys.stderr)
        else:
            values = decade_grid(a, b)
    label = name.lstrip("-").replace("-", " ")  # --h: h; --weight-decay: weight decay
    for v in values:
        if not math.isfinite(v):
            raise SpecError(f"{name}: {label} must be finite, got {v:g}")
        if v < 0:  # the bound the field's own check states (spec.py: an lr of 0 is refused too)
            raise SpecError(f"{name}: {label} must be {'> 0' if label == 'lr' else '>= 0'}, got {v:g}")
    return list(dict.fromkeys(values))


def _too_many(count: int, limit: int, name: str = "--seeds") -> None:
    if count > limit:
        raise SpecError(f"{name}: {count:,} seeds is more than a grid may hold ({limit:,} runs; --max-runs N "
                        "allows more)")


def parse_seeds(value, limit: int | None = None, name: str = "--seeds") -> list[int]:
    """5 -> seeds 0..4; '7,8,9' -> those; '3..6' -> 3, 4, 5, 6. More than `limit` seeds are refused
    before any is listed (default: MAX_RUNS)."""
    limit = MAX_RUNS if limit is None else limit
    if isinstance(value, bool):
        raise SpecError(f"{name}: {value!r} is not a count or a list of seeds")
    if isinstance(value, int):
        if value < 1:
            raise SpecError(f"{name}: a count of seeds must be >= 1, got {value}")
        _too_many(value, limit, name)
        return list(range(value))
    if isinstance(value, (list, tuple)):
        _too_many(len(value), limit, name)
        return list(dict.fromkeys(checked_count("seed", whole("seeds", v), minimum=0, maximum=MAX_SEED) for v in value))
    text = str(value).strip()
    if ".." in text:
        lo, _, hi = text.partition("..")
        a, b = parse_ints(name, lo)[0], parse_ints(name, hi)[0]
        if a < 0 or b < a:
            raise SpecError(f"{name}: range {shown(text)} is empty or negative")
        _too_many(b - a + 1, limit, name)
        checked_count("seed", b, minimum=0, maximum=MAX_SEED)
        return list(range(a, b + 1))
    items = parse_ints(name, text)
    if len(items) == 1 and "," not in text:
        return parse_seeds(items[0], limit, name)
    _too_many(len(items), limit, name)
    for s in items:
        checked_count("seed", s, minimum=0, maximum=MAX_SEED)
    return list(dict.fromkeys(items))


def parse_seed_names(name: str, text: str) -> list[int]:
    """`train --seed`: seeds by name, never a count: '3' is seed 3; '3,4' and '3..6' as in --seeds."""
    text = str(text).strip()
    if "," in text or ".." in text:
        return parse_seeds(text, name=name)
    seed = parse_ints(name, text)[0]
    return [checked_count("seed", seed, minimum=0, maximum=MAX_SEED)]


def whole(name: str, value) -> int:
    """A YAML list item that must be a whole number: an int or a numeric string, never 3.7 or true."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{name}: {shown(value)} is not a whole number")
    return value


def real(name: str, value) -> float:
    """A YAML list item that must be a number: an int, a float or a numeric string such as '1e-3'."""
    if isinstance(value, str):
        return _number(name, value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{name}: {shown(value)} is not a number")
    return float(value)


# The axes nest in field order, but h (the study's axis) and the seed (its repeats) innermost: runs


# On and off, as a flag (--bn on,off) or a YAML key (bn: [true, false]) writes them.
SWITCH_WORDS = {"on": True, "true": True, "off": False, "false": False}


def switch(name: str, value) -> bool:
    """A YAML list item or a flag's word that must be on or off: a YAML boolean, on/off or true/false."""
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word not in SWITCH_WORDS:
        raise SpecError(f"{name}: {shown(value)} is neither on nor off (write on, off, true or false)")
    return SWITCH_WORDS[word]


def word(name: str, value) -> str:
    """A YAML list item or a flag's item that must be a name (an optimizer's): text, not a number."""
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{name}: {shown(value)} is not a name")
    return value.strip()


def _listed(item):
    """The flag's parser of comma-separated items, each read by `item`; an empty item is refused."""

    def parse(name: str, text: str) -> list:
        items = [t.strip() for t in str(text).split(",")]
        if any(t == "" for t in items):
            raise SpecError(f"{name} must be a comma-separated list, got {shown(text)}")
        return [item(name, t) for t in items]

    return parse


# A list axis by its field's type: (YAML item, flag text) readers.
LISTS = {int: (whole, parse_ints), float: (real, parse_floats), bool: (switch, _listed(switch)),
         str: (word, _listed(word))}


def axis_values(f, given, name: str, max_runs: int = MAX_RUNS) -> tuple:
    """The distinct values of the axis of field `f` as given (a flag's text, a YAML list or one YAML
    value), named `name` in errors, by the axis's syntax: h's ranges, seeds (a count too), or a list
    of the field's type. More than `max_runs` values of a range or of seeds are refused unlisted."""
    syntax = meta(f).grid_syntax
    if syntax == "seeds":
        return tuple(parse_seeds(given, max_runs, name))
    if syntax == "range":
        item, parse = real, lambda _name, text: parse_h_grid(text, name, max_runs)
    else:
        item, parse = LISTS[FIELD_TYPES[f.name]]
    if isinstance(given, str):
        return tuple(dict.fromkeys(parse(name, given)))
    listed = given if isinstance(given, (list, tuple)) else [given]  # one YAML value: a list of one
    return tuple(dict.fromkeys(item(name, v) for v in listed))
