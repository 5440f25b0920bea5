"""CEL runtime values, operators and the function library of the Kubernetes CEL environment.

Value mapping: bool, int (int64), CelUint, float (double), str, bytes, None (null), list, dict (map),
Decimal (a Kubernetes Quantity), Semver. Runtime errors are ``EvalError``; ``&&``, ``||`` and the
``all``/``exists`` macros absorb them as CEL does (see cel.py).

Functions: the CEL standard library (size, contains, startsWith, endsWith, matches, conversions),
strings ext v2, and the Kubernetes libraries of k8s.io/apiserver/pkg/cel/library: quantity.go,
semverlib.go, lists.go, regex.go and sets.go.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from functools import lru_cache

from mlplane.api.quantity import parse_quantity
from mlplane.policy.device.cel_parse import INT64_MAX, INT64_MIN, CelUint
from mlplane.policy.device.cel_semver import Semver


class EvalError(Exception):
    """A CEL runtime error value."""


def type_name(v: object) -> str:
    """The CEL type name of a runtime value, for error messages."""
    t = type(v)
    return {bool: "bool", int: "int", CelUint: "uint", float: "double", str: "string", bytes: "bytes",
            type(None): "null_type", list: "list", tuple: "list", Decimal: "kubernetes.Quantity",
            Semver: "kubernetes.Semver"}.get(t) or ("map" if isinstance(v, dict) else t.__name__)


def no_overload(op: str, *args: object) -> EvalError:
    return EvalError(f"no such overload: {op}({', '.join(type_name(a) for a in args)})")


def check_int(v: int) -> int:
    if v < INT64_MIN or v > INT64_MAX:
        raise EvalError("integer overflow")
    return v


def check_uint(v: int) -> CelUint:
    if v < 0 or v >= 2**64:
        raise EvalError("unsigned integer overflow")
    return CelUint(v)


_NUM = (int, CelUint, float)


def equals(a: object, b: object) -> bool:
    """CEL heterogeneous equality: numbers compare across int/uint/double, other types never equal."""
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is list or ta is tuple:
            return len(a) == len(b) and all(equals(x, y) for x, y in zip(a, b))
        return a == b
    if ta in _NUM and tb in _NUM:
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return len(a) == len(b) and all(k in b and equals(v, b[k]) for k, v in a.items())
    if (ta is list or ta is tuple) and (tb is list or tb is tuple):
        return len(a) == len(b) and all(equals(x, y) for x, y in zip(a, b))
    return False


def compare(op: str, a: object, b: object) -> int:
    """-1/0/1 for the ordering operators; numbers compare across types (CrossTypeNumericComparisons)."""
    ta, tb = type(a), type(b)
    if (ta is tb and ta in (str, bytes, bool)) or (ta in _NUM and tb in _NUM):
        return -1 if a < b else (1 if a > b else 0)
    raise no_overload(op, a, b)


def contains(container: object, item: object) -> bool:
    """The ``in`` operator."""
    if isinstance(container, dict):
        if type(item) is bool:
            return any(type(k) is bool and k == item for k in container)
        return item in container and (type(item) is not int or not any(type(k) is bool for k in container))
    if type(container) in (list, tuple):
        return any(equals(item, x) for x in container)
    raise no_overload("@in", item, container)


def index(obj: object, key: object) -> object:
    """``obj[key]`` on lists and maps."""
    if isinstance(obj, dict):
        try:
            return obj[key]
        except KeyError:
            raise EvalError(f"no such key: {key}") from None
        except TypeError:
            raise no_overload("_[_]", obj, key) from None
    if type(obj) in (list, tuple):
        if type(key) not in _NUM or (type(key) is float and not key.is_integer()):
            raise no_overload("_[_]", obj, key)
        i = int(key)
        if i < 0 or i >= len(obj):
            raise EvalError(f"index out of bounds: {i}")
        return obj[i]
    raise no_overload("_[_]", obj, key)


def arith(op: str, a: object, b: object) -> object:
    ta, tb = type(a), type(b)
    if ta is not tb:
        raise no_overload(op, a, b)
    if ta is int:
        if op == "+":
            return check_int(a + b)
        if op == "-":
            return check_int(a - b)
        if op == "*":
            return check_int(a * b)
        if b == 0:
            raise EvalError("division by zero" if op == "/" else "modulus by zero")
        q = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)  # truncates toward zero, as Go does
        return check_int(q) if op == "/" else a - b * q
    if ta is CelUint:
        if op in "/%" and b == 0:
            raise EvalError("division by zero" if op == "/" else "modulus by zero")
        r = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
             "/": lambda: a // b, "%": lambda: a % b}[op]()
        return check_uint(r)
    if ta is float and op != "%":
        if op == "/":
            if b == 0.0:  # IEEE 754, as Go computes it
                return math.nan if a == 0.0 or a != a else math.copysign(math.inf, a) * math.copysign(1.0, b)
            return a / b
        return a + b if op == "+" else (a - b if op == "-" else a * b)
    if op == "+" and ta in (str, bytes):
        return a + b
    if op == "+" and ta in (list, tuple):
        return list(a) + list(b)
    raise no_overload(op, a, b)


def negate(a: object) -> object:
    if type(a) is int:
        return check_int(-a)
    if type(a) is float:
        return -a
    raise no_overload("-_", a)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise EvalError(f"invalid regular expression {pattern!r}: {e}") from None


def _size(x):
    if type(x) in (str, bytes, list, tuple) or isinstance(x, dict):
        return len(x)
    raise no_overload("size", x)


def _want(name, cond, *args):
    if not cond:
        raise no_overload(name, *args)


def _to_int(x):
    t = type(x)
    if t is int or t is CelUint:
        return check_int(int(x))
    if t is float:
        if x != x or not (-(2.0**63) <= x < 2.0**63):
            raise EvalError("double out of int range" if x == x else "integer overflow")
        return int(x)
    if t is str:
        try:
            return check_int(int(x, 10))
        except ValueError:
            raise EvalError(f"cannot convert {x!r} to int") from None
    raise no_overload("int", x)


def _to_uint(x):
    t = type(x)
    if t in (int, CelUint):
        return check_uint(int(x))
    if t is float:
        if x != x or not (0 <= x < 2.0**64):
            raise EvalError("unsigned integer overflow")
        return CelUint(int(x))
    if t is str:
        try:
            return check_uint(int(x, 10))
        except ValueError:
            raise EvalError(f"cannot convert {x!r} to uint") from None
    raise no_overload("uint", x)


def _to_double(x):
    t = type(x)
    if t in _NUM:
        return float(x)
    if t is str:
        try:
            return float(x)
        except ValueError:
            raise EvalError(f"cannot convert {x!r} to double") from None
    raise no_overload("double", x)


def _fmt_double(x: float) -> str:
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x) if not x.is_integer() or abs(x) >= 1e21 else str(int(x))


def _to_string(x):
    t = type(x)
    if t is str:
        return x
    if t is bool:
        return "true" if x else "false"
    if t in (int, CelUint):
        return str(int(x))
    if t is float:
        return _fmt_double(x)
    if t is bytes:
        try:
            return x.decode("utf-8")
        except UnicodeDecodeError:
            raise EvalError("invalid UTF-8 in bytes, cannot convert to string") from None
    if t is Semver:
        return str(x)
    raise no_overload("string", x)


def _to_bool(x):
    if type(x) is bool:
        return x
    if type(x) is str:
        if x in ("1", "t", "true", "TRUE", "True"):
            return True
        if x in ("0", "f", "false", "FALSE", "False"):
            return False
        raise EvalError(f"type conversion error from 'string' to 'bool': {x!r}")
    raise no_overload("bool", x)


def _quantity(s):
    _want("quantity", type(s) is str, s)
    try:
        return parse_quantity(s)
    except ValueError as e:
        raise EvalError(str(e)) from None


def _is_quantity(s):
    _want("isQuantity", type(s) is str, s)
    try:
        parse_quantity(s)
        return True
    except ValueError:
        return False


def _semver(s, normalize=False):
    _want("semver", type(s) is str and type(normalize) is bool, s)
    try:
        return Semver.parse(s, normalize)
    except ValueError as e:
        raise EvalError(f"could not parse semver: {e}") from None


def _is_semver(s, normalize=False):
    _want("isSemver", type(s) is str and type(normalize) is bool, s)
    try:
        Semver.parse(s, normalize)
        return True
    except ValueError:
        return False


def _ordered(name, a, b):
    """compareTo/isGreaterThan/isLessThan on Quantity and Semver (quantity.go, semverlib.go)."""
    if type(a) is Decimal and type(b) is Decimal:
        return (a > b) - (a < b)
    if type(a) is Semver and type(b) is Semver:
        return a.compare(b)
    raise no_overload(name, a, b)


def _q_arith(name, q, x):
    if type(q) is Decimal and type(x) in (Decimal, int):
        return q + x if name == "add" else q - x
    raise no_overload(name, q, x)


def _as_integer(q):
    _want("asInteger", type(q) is Decimal, q)
    if q != q.to_integral_value() or not INT64_MIN <= q <= INT64_MAX:
        raise EvalError("cannot convert value to integer")
    return int(q)


def _semver_part(name):
    def part(v):
        _want(name, type(v) is Semver, v)
        return getattr(v, name)
    return part


def _index_of(name, last):
    def impl(x, sub, start=None):
        if type(x) is str and type(sub) is str and (start is None or type(start) is int):
            if start is not None and not 0 <= start <= len(x):
                raise EvalError(f"index out of range: {start}")
            if last:
                return x.rfind(sub, 0, len(x) if start is None else start + len(sub))
            return x.find(sub, 0 if start is None else start)
        if type(x) in (list, tuple) and start is None:
            hits = [i for i, v in enumerate(x) if equals(v, sub)]
            return (hits[-1] if last else hits[0]) if hits else -1
        raise no_overload(name, x, sub)
    return impl


def _char_at(s, i):
    _want("charAt", type(s) is str and type(i) is int, s, i)
    if not 0 <= i <= len(s):
        raise EvalError(f"index out of range: {i}")
    return s[i:i + 1]


def _replace(s, old, new, n=-1):
    _want("replace", type(s) is str and type(old) is str and type(new) is str and type(n) is int, s)
    return s.replace(old, new, n if n >= 0 else -1)


def _split(s, sep, n=-1):
    _want("split", type(s) is str and type(sep) is str and type(n) is int, s, sep)
    if n == 0:
        return []
    if sep == "":
        parts = list(s)
        return parts if n < 0 or n >= len(parts) else parts[:n - 1] + ["".join(parts[n - 1:])]
    return s.split(sep, n - 1 if n > 0 else -1)


def _substring(s, start, end=None):
    _want("substring", type(s) is str and type(start) is int, s, start)
    end = len(s) if end is None else end
    if not 0 <= start <= end <= len(s):
        raise EvalError(f"index out of range: {start}, {end}")
    return s[start:end]


def _join(lst, sep=""):
    _want("join", type(lst) in (list, tuple) and all(type(x) is str for x in lst), lst)
    return sep.join(lst)


def _list_check(name, lst):
    _want(name, type(lst) in (list, tuple), lst)
    return lst


def _is_sorted(lst):
    _list_check("isSorted", lst)
    return all(compare("isSorted", lst[i], lst[i + 1]) <= 0 for i in range(len(lst) - 1))


def _sum(lst):
    _list_check("sum", lst)
    total = 0
    for x in lst:
        total = arith("+", total, x) if total != 0 or type(x) is int else x
    return total


def _extreme(name, pick):
    def impl(lst):
        _list_check(name, lst)
        if not lst:
            raise EvalError(f"{name} called on empty list")
        best = lst[0]
        for x in lst[1:]:
            if compare(name, x, best) == pick:
                best = x
        return best
    return impl


def _find(s, pattern):
    _want("find", type(s) is str and type(pattern) is str, s, pattern)
    m = _regex(pattern).search(s)
    return m.group() if m else ""


def _find_all(s, pattern, n=-1):
    _want("findAll", type(s) is str and type(pattern) is str and type(n) is int, s, pattern)
    found = [m.group() for m in _regex(pattern).finditer(s)]
    return found if n < 0 else found[:n]


def _matches(s, pattern):
    _want("matches", type(s) is str and type(pattern) is str, s, pattern)
    return _regex(pattern).search(s) is not None


def _sets(name, test):
    def impl(a, b):
        _want(name, type(a) in (list, tuple) and type(b) in (list, tuple), a, b)
        return test(a, b)
    return impl


def _subset(a, b):
    return all(any(equals(x, y) for y in a) for x in b)


def _str_pred(name, fn):
    def impl(s, t):
        _want(name, type(s) is str and type(t) is str, s, t)
        return fn(s, t)
    return impl


def _str_unary(name, fn):
    def impl(s):
        _want(name, type(s) is str, s)
        return fn(s)
    return impl


# name -> (implementation, result type, allowed receiver types (None: global), argument counts).
# Receiver and result types feed the compile-time checks in cel.py; "dyn" is unknown.
S, L, Q, V = "string", "list", "kubernetes.Quantity", "kubernetes.Semver"
FUNCTIONS: dict[str, tuple] = {
    "size": (_size, "int", {None, S, "bytes", L, "map"}, (0, 1)),
    "contains": (_str_pred("contains", lambda s, t: t in s), "bool", {S}, (1,)),
    "startsWith": (_str_pred("startsWith", str.startswith), "bool", {S}, (1,)),
    "endsWith": (_str_pred("endsWith", str.endswith), "bool", {S}, (1,)),
    "matches": (_matches, "bool", {None, S}, (1, 2)),
    "int": (_to_int, "int", {None}, (1,)),
    "uint": (_to_uint, "uint", {None}, (1,)),
    "double": (_to_double, "double", {None}, (1,)),
    "string": (_to_string, S, {None}, (1,)),
    "bool": (_to_bool, "bool", {None}, (1,)),
    "bytes": (lambda s: s.encode() if type(s) is str else _want("bytes", False, s), "bytes", {None}, (1,)),
    "dyn": (lambda x: x, "dyn", {None}, (1,)),
    # strings ext v2
    "charAt": (_char_at, S, {S}, (1,)),
    "indexOf": (_index_of("indexOf", False), "int", {S, L}, (1, 2)),
    "lastIndexOf": (_index_of("lastIndexOf", True), "int", {S, L}, (1, 2)),
    "lowerAscii": (_str_unary("lowerAscii", lambda s: "".join(c.lower() if c.isascii() else c for c in s)), S, {S}, (0,)),
    "upperAscii": (_str_unary("upperAscii", lambda s: "".join(c.upper() if c.isascii() else c for c in s)), S, {S}, (0,)),
    "trim": (_str_unary("trim", str.strip), S, {S}, (0,)),
    "replace": (_replace, S, {S}, (2, 3)),
    "split": (_split, L, {S}, (1, 2)),
    "substring": (_substring, S, {S}, (1, 2)),
    "join": (_join, S, {L}, (0, 1)),
    "strings.quote": (_str_unary("strings.quote", lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'), S, {None}, (1,)),
    # regex.go
    "find": (_find, S, {S}, (1,)),
    "findAll": (_find_all, L, {S}, (1, 2)),
    # lists.go
    "isSorted": (_is_sorted, "bool", {L}, (0,)),
    "sum": (_sum, "dyn", {L}, (0,)),
    "min": (_extreme("min", -1), "dyn", {L}, (0,)),
    "max": (_extreme("max", 1), "dyn", {L}, (0,)),
    # sets.go
    "sets.contains": (_sets("sets.contains", _subset), "bool", {None}, (2,)),
    "sets.equivalent": (_sets("sets.equivalent", lambda a, b: _subset(a, b) and _subset(b, a)), "bool", {None}, (2,)),
    "sets.intersects": (_sets("sets.intersects", lambda a, b: any(equals(x, y) for x in a for y in b)), "bool", {None}, (2,)),
    # quantity.go
    "quantity": (_quantity, Q, {None}, (1,)),
    "isQuantity": (_is_quantity, "bool", {None}, (1,)),
    "add": (lambda q, x: _q_arith("add", q, x), Q, {Q}, (1,)),
    "sub": (lambda q, x: _q_arith("sub", q, x), Q, {Q}, (1,)),
    "asInteger": (_as_integer, "int", {Q}, (0,)),
    "asApproximateFloat": (lambda q: float(q) if type(q) is Decimal else _want("asApproximateFloat", False, q), "double", {Q}, (0,)),
    "sign": (lambda q: (q > 0) - (q < 0) if type(q) is Decimal else _want("sign", False, q), "int", {Q}, (0,)),
    "isInteger": (lambda q: q == q.to_integral_value() and INT64_MIN <= q <= INT64_MAX if type(q) is Decimal else _want("isInteger", False, q), "bool", {Q}, (0,)),
    # quantity.go and semverlib.go share these three
    "compareTo": (lambda a, b: _ordered("compareTo", a, b), "int", {Q, V}, (1,)),
    "isGreaterThan": (lambda a, b: _ordered("isGreaterThan", a, b) > 0, "bool", {Q, V}, (1,)),
    "isLessThan": (lambda a, b: _ordered("isLessThan", a, b) < 0, "bool", {Q, V}, (1,)),
    # semverlib.go
    "semver": (_semver, V, {None}, (1, 2)),
    "isSemver": (_is_semver, "bool", {None}, (1, 2)),
    "major": (_semver_part("major"), "int", {V}, (0,)),
    "minor": (_semver_part("minor"), "int", {V}, (0,)),
    "patch": (_semver_part("patch"), "int", {V}, (0,)),
}
