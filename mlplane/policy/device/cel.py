"""CEL device selectors: the environment of k8s.io/dynamic-resource-allocation/cel/compile.go.

``compile_selector(expression)`` parses and checks an expression once and turns it into a tree of
Python closures; ``CompiledSelector.matches(device_view(...))`` evaluates it in microseconds.

The environment: one variable ``device`` with ``driver`` (string), ``attributes`` and ``capacity``
(maps of domain -> id -> value, where ids without a domain are grouped under the driver name; an
unknown domain is an empty map, an unknown id a runtime error) and ``allowMultipleAllocations``
(bool). Attribute values are int, bool, string or ``Semver``; capacities are Quantities (``Decimal``).
Functions: see cel_lib.py. The result must be a bool. The runtime cost limit is 1,000,000
(resourceapi.CELSelectorExpressionMaxCost); comprehension steps are what is charged, because
everything else is bounded by the expression's size.

Not supported (compile error "undeclared reference"): optional types, two-variable comprehensions,
and the URL, IP/CIDR, format, authz and image libraries.
"""

from __future__ import annotations

from collections import OrderedDict
from decimal import Decimal
from typing import Callable

from mlplane.api.quantity import parse_quantity
from mlplane.policy.device import cel_lib as lib
from mlplane.policy.device.cel_lib import EvalError
from mlplane.policy.device.cel_parse import CelUint, CELSyntaxError, Node, parse
from mlplane.policy.device.cel_semver import Semver

COST_LIMIT = 1_000_000  # resourceapi.CELSelectorExpressionMaxCost
MAX_EXPRESSION_LENGTH = 10 * 1024  # resourceapi.CELSelectorExpressionMaxLength

__all__ = ["CELCompileError", "CELRuntimeError", "CompiledSelector", "DeviceView", "Semver",
           "SelectorCache", "compile_selector", "device_view"]


class CELCompileError(ValueError):
    """A syntax or type error. ``position`` is the 0-based offset of the error in the expression."""

    def __init__(self, message: str, position: int):
        super().__init__(message)
        self.message = message
        self.position = position


class CELRuntimeError(RuntimeError):
    """An error while evaluating a selector against one device (for example "no such key")."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _Domains(dict):
    """domain -> id -> value; an unknown domain reads as an empty map, as upstream's
    newStringInterfaceMapWithDefault does."""

    __slots__ = ()

    def __missing__(self, key):
        if type(key) is not str:
            raise KeyError(key)
        return {}


class DeviceView:
    """The ``device`` variable of a selector."""

    __slots__ = ("driver", "attributes", "capacity", "allow_multiple_allocations")

    def __init__(self, driver: str, attributes: dict[str, dict[str, object]],
                 capacity: dict[str, dict[str, Decimal]], allow_multiple_allocations: bool = False):
        self.driver = driver
        self.attributes = attributes if type(attributes) is _Domains else _Domains(attributes)
        self.capacity = capacity if type(capacity) is _Domains else _Domains(capacity)
        self.allow_multiple_allocations = allow_multiple_allocations

    def __repr__(self) -> str:
        return (f"DeviceView(driver={self.driver!r}, attributes={dict(self.attributes)!r}, "
                f"capacity={dict(self.capacity)!r}, allow_multiple_allocations={self.allow_multiple_allocations})")


def _split_name(name: str, driver: str) -> tuple[str, str]:
    domain, sep, ident = name.rpartition("/")
    return (domain, ident) if sep else (driver, name)


def device_view(driver: str, attributes_by_qualified_name: dict[str, object],
                capacity_by_qualified_name: dict[str, object], allow_multiple: bool = False) -> DeviceView:
    """Build the view from ResourceSlice data: qualified names ("[domain/]id") are grouped by domain,
    with the driver name as the default domain. Attribute values are int, bool, str or Semver, or
    ([1.36 alpha] list-typed attributes) a list of one of them; capacities are quantity strings,
    numbers or Decimals. Raises ValueError naming a bad entry."""
    attributes: dict[str, dict[str, object]] = {}
    for name, value in attributes_by_qualified_name.items():
        if type(value) is list:
            if not value or len({type(v) for v in value}) != 1 or type(value[0]) not in (int, bool, str, Semver):
                raise ValueError(f"attribute {name}: unsupported attribute value {value!r}")
        elif type(value) not in (int, bool, str, Semver):
            raise ValueError(f"attribute {name}: unsupported attribute value {value!r}")
        domain, ident = _split_name(name, driver)
        attributes.setdefault(domain, {})[ident] = value
    capacity: dict[str, dict[str, Decimal]] = {}
    for name, value in capacity_by_qualified_name.items():
        domain, ident = _split_name(name, driver)
        try:
            q = value if type(value) is Decimal else parse_quantity(value)
        except ValueError as e:
            raise ValueError(f"capacity {name}: {e}") from None
        capacity.setdefault(domain, {})[ident] = q
    return DeviceView(driver, attributes, capacity, allow_multiple)


Fn = Callable[[DeviceView, dict], object]
_DEVICE_FIELDS = {"driver": "string", "attributes": "attributes", "capacity": "capacity",
                  "allowMultipleAllocations": "bool"}
_LIT_TYPES = {bool: "bool", int: "int", CelUint: "uint", float: "double", str: "string",
              bytes: "bytes", type(None): "null_type"}
_ORDERED = {"<": lambda c: c < 0, "<=": lambda c: c <= 0, ">": lambda c: c > 0, ">=": lambda c: c >= 0}
_NUMERIC = {"int", "uint", "double"}
# Internal refinements of map types (so that lookups know their value type) and their CEL name.
_PUBLIC = {"attributes": "map", "capacity": "map", "attr_ids": "map", "cap_ids": "map"}
_FOLDABLE = {"quantity", "semver", "isQuantity", "isSemver"}


class _Compiler:
    """Checks a parsed expression and turns it into closures ``f(device, env) -> value``.

    ``env`` holds comprehension and bind variables and the running cost under "#cost"."""

    def __init__(self, text: str):
        self.text = text
        self.uses_env = False

    def fail(self, message: str, pos: int):
        raise CELSyntaxError(message, pos)

    def compile(self, n: Node, scope: dict[str, str]) -> tuple[Fn, str]:
        return getattr(self, "c_" + n.kind)(n, scope)

    def c_lit(self, n: Node, scope):
        v = n.value
        return (lambda d, e: v), _LIT_TYPES[type(v)]

    def c_ident(self, n: Node, scope):
        name = n.name
        if name in scope:
            return (lambda d, e: e[name]), scope[name]
        if name == "device":
            return (lambda d, e: d), "device"
        self.fail(f"undeclared reference to '{name}' (in container '')", n.pos)

    def c_select(self, n: Node, scope):
        operand, t = self.compile(n.args[0], scope)
        name = n.name
        if t == "device":
            if name not in _DEVICE_FIELDS:
                self.fail(f"undefined field '{name}'", n.pos)
            attr = "allow_multiple_allocations" if name == "allowMultipleAllocations" else name
            if n.args[0].kind == "ident" and n.args[0].name == "device" and "device" not in scope:
                if attr == "driver":
                    return (lambda d, e: d.driver), "string"
                if attr == "attributes":
                    return (lambda d, e: d.attributes), "attributes"
                if attr == "capacity":
                    return (lambda d, e: d.capacity), "capacity"
                return (lambda d, e: d.allow_multiple_allocations), "bool"
            return (lambda d, e: getattr(operand(d, e), attr)), _DEVICE_FIELDS[name]
        if t not in ("dyn", "map", "attributes", "capacity", "attr_ids", "cap_ids"):
            self.fail(f"type '{t}' does not support field selection", n.pos)

        def select(d, e):
            v = operand(d, e)
            try:
                return v[name]
            except KeyError:
                raise EvalError(f"no such key: {name}") from None
            except TypeError:
                if type(v) is DeviceView and name in _DEVICE_FIELDS:
                    return getattr(v, "allow_multiple_allocations" if name[0] == "a" and name[1] == "l" else name)
                raise EvalError(f"type '{lib.type_name(v)}' does not support field selection") from None
        return select, self._member_type(t)

    @staticmethod
    def _member_type(t: str) -> str:
        return {"attributes": "attr_ids", "capacity": "cap_ids", "cap_ids": lib.Q}.get(t, "dyn")

    def c_index(self, n: Node, scope):
        operand, t = self.compile(n.args[0], scope)
        key, kt = self.compile(n.args[1], scope)
        if t not in ("dyn", "map", "list", "attributes", "capacity", "attr_ids", "cap_ids"):
            self.fail(f"found no matching overload for '_[_]' applied to '({t}, {kt})'", n.pos)
        if n.args[1].kind == "lit" and type(n.args[1].value) is str:
            k = n.args[1].value

            def index_str(d, e):
                v = operand(d, e)
                try:
                    return v[k]
                except KeyError:
                    raise EvalError(f"no such key: {k}") from None
                except TypeError:
                    return lib.index(v, k)
            return index_str, self._member_type(t)
        return (lambda d, e: lib.index(operand(d, e), key(d, e))), self._member_type(t)

    def c_has(self, n: Node, scope):
        operand, t = self.compile(n.args[0], scope)
        name = n.name
        if t == "device":
            if name not in _DEVICE_FIELDS:
                self.fail(f"undefined field '{name}'", n.pos)
            return (lambda d, e: True), "bool"

        def has(d, e):
            v = operand(d, e)
            if isinstance(v, dict):
                return name in v
            if type(v) is DeviceView:
                return name in _DEVICE_FIELDS
            raise EvalError(f"invalid type for field selection: {lib.type_name(v)}")
        return has, "bool"

    def c_list(self, n: Node, scope):
        items = [self.compile(a, scope)[0] for a in n.args]
        return (lambda d, e: [f(d, e) for f in items]), "list"

    def c_map(self, n: Node, scope):
        pairs = [(self.compile(n.args[i], scope)[0], self.compile(n.args[i + 1], scope)[0])
                 for i in range(0, len(n.args), 2)]

        def build(d, e):
            out = {}
            for kf, vf in pairs:
                k = kf(d, e)
                if type(k) not in (str, int, CelUint, bool):
                    raise EvalError(f"unsupported key type: {lib.type_name(k)}")
                if k in out:
                    raise EvalError(f"Failed with repeated key: {k}")
                out[k] = vf(d, e)
            return out
        return build, "map"

    def c_not(self, n: Node, scope):
        x, t = self.compile(n.args[0], scope)
        self._expect("!_", t, {"bool"}, n.pos)

        def not_(d, e):
            v = x(d, e)
            if v is True or v is False:
                return not v
            raise lib.no_overload("!_", v)
        return not_, "bool"

    def c_neg(self, n: Node, scope):
        x, t = self.compile(n.args[0], scope)
        self._expect("-_", t, {"int", "double"}, n.pos)
        return (lambda d, e: lib.negate(x(d, e))), t

    def _expect(self, op: str, t: str, allowed: set[str], pos: int):
        if t != "dyn" and t not in allowed:
            self.fail(f"found no matching overload for '{op}' applied to '({t})'", pos)

    def c_and(self, n: Node, scope):
        return self._logic(n, scope, False)

    def c_or(self, n: Node, scope):
        return self._logic(n, scope, True)

    def _logic(self, n: Node, scope, is_or: bool):
        """CEL's commutative && and ||: a decisive operand wins over an error in the other one."""
        (l, lt), (r, rt) = self.compile(n.args[0], scope), self.compile(n.args[1], scope)
        op = "_||_" if is_or else "_&&_"
        for t in (lt, rt):
            self._expect(op, t, {"bool"}, n.pos)
        decisive = is_or

        def logic(d, e):
            try:
                a = l(d, e)
                err = None if a is True or a is False else lib.no_overload(op, a)
            except EvalError as ex:
                err = ex
            if err is None and a is decisive:
                return decisive
            try:
                b = r(d, e)
            except EvalError:
                if err is not None:
                    raise err from None
                raise
            if b is decisive:
                return decisive
            if b is not (not decisive):
                raise err or lib.no_overload(op, b)
            if err is not None:
                raise err
            return b
        return logic, "bool"

    def c_cond(self, n: Node, scope):
        (c, ct), (t, tt), (f, ft) = (self.compile(a, scope) for a in n.args)
        self._expect("_?_:_", ct, {"bool"}, n.pos)

        def cond(d, e):
            v = c(d, e)
            if v is True:
                return t(d, e)
            if v is False:
                return f(d, e)
            raise lib.no_overload("_?_:_", v)
        return cond, (tt if tt == ft else "dyn")

    def c_binop(self, n: Node, scope):
        op = n.name
        (l, lt), (r, rt) = self.compile(n.args[0], scope), self.compile(n.args[1], scope)
        lt, rt = _PUBLIC.get(lt, lt), _PUBLIC.get(rt, rt)
        known = lt != "dyn" and rt != "dyn"
        if op in ("==", "!="):
            if known and lt != rt and not (lt in _NUMERIC and rt in _NUMERIC) and "null_type" not in (lt, rt):
                self.fail(f"found no matching overload for '_{op}_' applied to '({lt}, {rt})'", n.pos)
            neg = op == "!="
            if n.args[1].kind == "lit" and type(n.args[1].value) in (str, int, bool):
                c, ct = n.args[1].value, type(n.args[1].value)

                def eq_const(d, e):
                    v = l(d, e)
                    return (v == c if type(v) is ct else lib.equals(v, c)) is not neg
                return eq_const, "bool"
            return (lambda d, e: lib.equals(l(d, e), r(d, e)) is not neg), "bool"
        if op in _ORDERED:
            ok = {"string", "bytes", "bool"} | _NUMERIC
            if known and not ((lt in _NUMERIC and rt in _NUMERIC) or (lt == rt and lt in ok)):
                self.fail(f"found no matching overload for '_{op}_' applied to '({lt}, {rt})'", n.pos)
            test, name = _ORDERED[op], f"_{op}_"
            if n.args[1].kind == "lit" and type(n.args[1].value) in (int, float):
                c = n.args[1].value
                if op == ">=":
                    def ge_const(d, e):
                        v = l(d, e)
                        return v >= c if type(v) is int or type(v) is float else test(lib.compare(name, v, c))
                    return ge_const, "bool"
                if op == ">":
                    def gt_const(d, e):
                        v = l(d, e)
                        return v > c if type(v) is int or type(v) is float else test(lib.compare(name, v, c))
                    return gt_const, "bool"
            return (lambda d, e: test(lib.compare(name, l(d, e), r(d, e)))), "bool"
        if op == "in":
            if rt not in ("dyn", "list", "map"):
                self.fail(f"found no matching overload for '@in' applied to '({lt}, {rt})'", n.pos)
            return (lambda d, e: lib.contains(r(d, e), l(d, e))), "bool"
        if known and lt != rt:
            self.fail(f"found no matching overload for '_{op}_' applied to '({lt}, {rt})'", n.pos)
        return (lambda d, e: lib.arith(op, l(d, e), r(d, e))), (lt if lt == rt else "dyn")

    def c_call(self, n: Node, scope):
        name, target = n.name, n.target
        if n.value is not None and n.value.name in scope:  # "sets.x(...)" where sets is a variable
            target, name = n.value, name.split(".", 1)[1]
        entry = lib.FUNCTIONS.get(name)
        if entry is None:
            self.fail(f"undeclared reference to '{name}' (in container '')", n.pos)
        impl, result, receivers, arities = entry
        args = [self.compile(a, scope) for a in n.args]
        arg_types = ", ".join(t for _, t in args)
        if target is None:
            if None not in receivers or len(args) not in arities:
                self.fail(f"found no matching overload for '{name}' applied to '({arg_types})'", n.pos)
            fns = [f for f, _ in args]
            if name in _FOLDABLE and all(a.kind == "lit" for a in n.args):
                try:  # quantity("1Gi") and semver("1.0.0") with literal arguments: parse once
                    value = impl(*[a.value for a in n.args])
                    return (lambda d, e: value), result
                except EvalError:
                    pass  # stays a runtime error, as in cel-go
            if len(fns) == 1:
                a0 = fns[0]
                return (lambda d, e: impl(a0(d, e))), result
            return (lambda d, e: impl(*[f(d, e) for f in fns])), result
        recv, rt = self.compile(target, scope)
        rt = static_rt = _PUBLIC.get(rt, rt)
        if receivers == {None} or len(args) not in arities or (static_rt != "dyn" and static_rt not in receivers):
            self.fail(f"found no matching overload for '{name}' applied to '{rt}.({arg_types})'", n.pos)
        if name in ("isGreaterThan", "isLessThan", "compareTo") and static_rt != "dyn" and args[0][1] not in ("dyn", static_rt):
            self.fail(f"found no matching overload for '{name}' applied to '{rt}.({arg_types})'", n.pos)
        if len(args) == 0:
            return (lambda d, e: impl(recv(d, e))), result
        if len(args) == 1:
            a0 = args[0][0]
            return (lambda d, e: impl(recv(d, e), a0(d, e))), result
        fns = [f for f, _ in args]
        return (lambda d, e: impl(recv(d, e), *[f(d, e) for f in fns])), result

    def c_bind(self, n: Node, scope):
        self.uses_env = True
        init, it = self.compile(n.args[0], scope)
        body, bt = self.compile(n.args[1], {**scope, n.var: it})
        var, missing = n.var, object()

        def bind(d, e):
            saved = e.get(var, missing)
            e[var] = init(d, e)
            try:
                return body(d, e)
            finally:
                if saved is missing:
                    del e[var]
                else:
                    e[var] = saved
        return bind, bt

    def c_comp(self, n: Node, scope):
        """all, exists, exists_one, map and filter over a list (elements) or map (keys)."""
        self.uses_env = True
        rng, rt = self.compile(n.args[0], scope)
        if rt not in ("dyn", "list", "map", "attributes", "capacity", "attr_ids", "cap_ids"):
            self.fail(f"expression of type '{rt}' cannot be range of a comprehension "
                      f"(must be list, map, or dynamic)", n.pos)
        inner = {**scope, n.var: "dyn"}
        steps = [self.compile(a, inner) for a in n.args[1:]]
        for f, t in steps if n.name != "map" else steps[:-1] if len(steps) == 2 else []:
            self._expect(n.name, t, {"bool"}, n.pos)
        step_cost = 1 + sum(_size(a) for a in n.args[1:])
        var, macro, missing = n.var, n.name, object()
        pred = steps[0][0]
        transform = steps[-1][0] if macro == "map" else None

        def comp(d, e):
            coll = rng(d, e)
            if isinstance(coll, dict):
                items = list(coll)
            elif type(coll) in (list, tuple):
                items = coll
            else:
                raise EvalError(f"got '{lib.type_name(coll)}', expected iterable type")
            saved = e.get(var, missing)
            try:
                return run(d, e, items)
            finally:
                if saved is missing:
                    e.pop(var, None)
                else:
                    e[var] = saved

        def charge(e):
            cost = e.get("#cost", 0) + step_cost
            if cost > COST_LIMIT:
                raise EvalError("operation cancelled: actual cost limit exceeded")
            e["#cost"] = cost

        def run(d, e, items):
            if macro in ("all", "exists"):
                decisive, err = macro == "exists", None
                for x in items:
                    charge(e)
                    e[var] = x
                    try:
                        v = pred(d, e)
                    except EvalError as ex:
                        err = err or ex
                        continue
                    if v is decisive:
                        return decisive
                    if v is not (not decisive):
                        err = err or lib.no_overload(macro, v)
                if err is not None:
                    raise err
                return not decisive
            if macro == "exists_one":
                count = 0
                for x in items:
                    charge(e)
                    e[var] = x
                    v = pred(d, e)
                    if v is True:
                        count += 1
                    elif v is not False:
                        raise lib.no_overload(macro, v)
                return count == 1
            out = []
            for x in items:
                charge(e)
                e[var] = x
                if macro == "filter" or len(steps) == 2:
                    keep = pred(d, e)
                    if keep is not True and keep is not False:
                        raise lib.no_overload(macro, keep)
                    if not keep:
                        continue
                out.append(x if macro == "filter" else transform(d, e))
            return out
        return comp, ("bool" if macro in ("all", "exists", "exists_one") else "list")


def _size(n: Node) -> int:
    return 1 + sum(_size(a) for a in n.args) + (_size(n.target) if n.target else 0)


def _location(text: str, offset: int) -> tuple[int, int, str]:
    line = text.count("\n", 0, offset) + 1
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return line, offset - start + 1, text[start:end if end != -1 else len(text)]


class CompiledSelector:
    """A checked selector expression, ready to evaluate against many devices."""

    __slots__ = ("expression", "_fn", "_uses_env")

    def __init__(self, expression: str, fn: Fn, uses_env: bool):
        self.expression = expression
        self._fn = fn
        self._uses_env = uses_env

    def matches(self, device: DeviceView) -> bool:
        """Evaluate against one device; raise CELRuntimeError (naming the expression) on errors,
        including a result that is not a bool."""
        try:
            result = self._fn(device, {} if self._uses_env else _NO_ENV)
        except EvalError as e:
            raise CELRuntimeError(f"CEL runtime error in {self.expression!r}: {e}") from None
        except RecursionError:
            raise CELRuntimeError(f"CEL runtime error in {self.expression!r}: nesting too deep") from None
        if result is True or result is False:
            return result
        raise CELRuntimeError(f"CEL runtime error in {self.expression!r}: CEL result of type "
                              f"{lib.type_name(result)} could not be converted to bool")

    def __repr__(self) -> str:
        return f"CompiledSelector({self.expression!r})"


_NO_ENV: dict = {}


def compile_selector(expression: str) -> CompiledSelector:
    """Parse and check a selector; raise CELCompileError with a cel-go style message
    ("compilation failed: ERROR: <input>:LINE:COL: ..." plus the source line and a caret)."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise CELCompileError(f"expression too long: must have at most {MAX_EXPRESSION_LENGTH} "
                              f"bytes, got {len(expression)}", 0)
    compiler = _Compiler(expression)
    try:
        fn, result_type = compiler.compile(parse(expression), {})
        if result_type not in ("bool", "dyn"):
            # compile.go: only bool or the unknown (any/dyn) type may be the result type.
            raise CELCompileError(f"must evaluate to bool or the unknown type, not {result_type}", 0)
    except CELSyntaxError as e:
        line, col, src = _location(expression, e.offset)
        raise CELCompileError(f"compilation failed: ERROR: <input>:{line}:{col}: {e.message}\n"
                              f" | {src}\n | {'.' * (col - 1)}^", e.offset) from None
    except RecursionError:
        raise CELCompileError("compilation failed: expression nested too deeply", 0) from None
    return CompiledSelector(expression, fn, compiler.uses_env)


class SelectorCache:
    """An LRU cache of compiled selectors keyed by expression (upstream: cel.Cache). Compile errors
    are cached too, so a bad expression is parsed once."""

    def __init__(self, max_size: int = 1000):
        self.max_size = max_size
        self._entries: OrderedDict[str, CompiledSelector | CELCompileError] = OrderedDict()

    def get(self, expression: str) -> CompiledSelector:
        """The compiled selector; raises the (cached) CELCompileError for a bad expression."""
        entry = self._entries.get(expression)
        if entry is None:
            try:
                entry = compile_selector(expression)
            except CELCompileError as e:
                entry = e
            self._entries[expression] = entry
            if len(self._entries) > self.max_size:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(expression)
        if isinstance(entry, CELCompileError):
            raise entry
        return entry

    def __len__(self) -> int:
        return len(self._entries)
