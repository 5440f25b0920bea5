"""Lexer and parser for CEL (the grammar of github.com/google/cel-spec doc/langdef.md).

``parse(text)`` returns a tree of ``Node``s; macros (``has``, ``all``, ``exists``, ``exists_one``,
``map``, ``filter`` and ``cel.bind``) are expanded into their own node kinds here, as cel-go's parser
does. Errors are ``CELSyntaxError(message, offset)`` with a 0-based offset into the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class CELSyntaxError(Exception):
    """A syntax error at a 0-based character offset."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.message = message
        self.offset = offset


class CelUint(int):
    """A CEL ``uint`` value (a distinct type from ``int`` in CEL)."""

    __slots__ = ()


@dataclass(eq=False)
class Node:
    """One expression node. ``kind`` selects which of the other fields are used:

    lit(value) ident(name) select(args=[operand], name) has(args=[operand], name)
    index(args=[operand, key]) call(name, target, args) list(args) map(args=[k1, v1, k2, v2...])
    cond(args=[c, t, f]) and/or(args=[l, r]) not/neg(args=[x]) binop(name=op, args=[l, r])
    comp(name=macro, var, args=[range, body(, filter)]) bind(var, args=[init, body])
    """

    kind: str
    pos: int
    name: str = ""
    value: object = None
    target: "Node | None" = None
    args: list["Node"] = field(default_factory=list)
    var: str = ""


_RESERVED = {"as", "break", "const", "continue", "else", "for", "function", "if", "import", "let",
             "loop", "package", "namespace", "return", "var", "void", "while"}

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n\f]+|//[^\n]*)
  | (?P<float>(?:[0-9]+\.[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+|\.[0-9]+(?:[eE][+-]?[0-9]+)?))
  | (?P<hex>0[xX][0-9a-fA-F]+[uU]?)
  | (?P<int>[0-9]+[uU]?)
  | (?P<str>[rRbB]{0,2}(?:\"\"\"(?:\\.|[^\\])*?\"\"\"|'''(?:\\.|[^\\])*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
  | (?P<ident>[_a-zA-Z][_a-zA-Z0-9]*)
  | (?P<op>\|\||&&|==|!=|<=|>=|[<>!+\-*/%?:.,\[\](){}])
""", re.VERBOSE | re.DOTALL)

_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", "'": "'", '"': '"', "`": "`", "?": "?"}
_MACROS = {"all": 2, "exists": 2, "exists_one": 2, "filter": 2}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _unescape(body: str, raw: bool, pos: int) -> str:
    if raw or "\\" not in body:
        return body
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        n = body[i + 1] if i + 1 < len(body) else ""
        if n in _ESCAPES:
            out.append(_ESCAPES[n])
            i += 2
        elif n in "xX" and re.fullmatch(r"[0-9a-fA-F]{2}", body[i + 2:i + 4]):
            out.append(chr(int(body[i + 2:i + 4], 16)))
            i += 4
        elif n == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2:i + 6]):
            out.append(chr(int(body[i + 2:i + 6], 16)))
            i += 6
        elif n == "U" and re.fullmatch(r"[0-9a-fA-F]{8}", body[i + 2:i + 10]):
            out.append(chr(int(body[i + 2:i + 10], 16)))
            i += 10
        elif re.fullmatch(r"[0-3][0-7]{2}", body[i + 1:i + 4]):
            out.append(chr(int(body[i + 1:i + 4], 8)))
            i += 4
        else:
            raise CELSyntaxError(f"Syntax error: invalid escape sequence '\\{n}'", pos)
    return "".join(out)


def _tokens(text: str) -> list[tuple[str, object, int]]:
    toks: list[tuple[str, object, int]] = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if not m:
            raise CELSyntaxError(f"Syntax error: token recognition error at: '{text[i]}'", i)
        kind, s = m.lastgroup, m.group()
        if kind == "float":
            toks.append(("lit", float(s), i))
        elif kind in ("hex", "int"):
            uint = s[-1] in "uU"
            v = int(s.rstrip("uU"), 16 if kind == "hex" else 10)
            if uint:
                if v >= 2**64:
                    raise CELSyntaxError("Syntax error: invalid uint literal", i)
                toks.append(("lit", CelUint(v), i))
            else:
                toks.append(("intlit", v, i))  # range-checked after an optional unary minus
        elif kind == "str":
            prefix = re.match(r"[rRbB]*", s).group()
            body = s[len(prefix):]
            q = 3 if body[:3] in ('"""', "'''") else 1
            value = _unescape(body[q:-q], "r" in prefix.lower(), i)
            toks.append(("lit", value.encode("utf-8") if "b" in prefix.lower() else value, i))
        elif kind == "ident":
            if s in ("true", "false"):
                toks.append(("lit", s == "true", i))
            elif s == "null":
                toks.append(("lit", None, i))
            elif s == "in":
                toks.append(("op", "in", i))
            elif s in _RESERVED:
                raise CELSyntaxError(f"Syntax error: reserved identifier: {s}", i)
            else:
                toks.append(("ident", s, i))
        elif kind == "op":
            toks.append(("op", s, i))
        i = m.end()
    toks.append(("eof", None, len(text)))
    return toks


class _Parser:
    def __init__(self, text: str):
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self, value: str) -> bool:
        kind, v, _ = self.toks[self.i]
        return kind == "op" and v == value

    def take(self, value: str) -> int:
        kind, v, pos = self.toks[self.i]
        if kind != "op" or v != value:
            found = "<EOF>" if kind == "eof" else repr(str(v) if v is not None else "null")
            raise CELSyntaxError(f"Syntax error: mismatched input {found} expecting '{value}'", pos)
        self.i += 1
        return pos

    def parse(self) -> Node:
        node = self.expr()
        kind, v, pos = self.toks[self.i]
        if kind != "eof":
            raise CELSyntaxError(f"Syntax error: extraneous input {str(v)!r} expecting <EOF>", pos)
        return node

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > 250:  # cel-go's default max recursion depth
            raise CELSyntaxError("Syntax error: expression recursion limit exceeded",
                                 self.toks[self.i][2])
        cond = self.binary(0)
        if self.peek("?"):
            pos = self.take("?")
            t = self.binary(0)
            self.take(":")
            f = self.expr()
            cond = Node("cond", pos, args=[cond, t, f])
        self.depth -= 1
        return cond

    _LEVELS = [("||",), ("&&",), ("==", "!=", "<", "<=", ">", ">=", "in"), ("+", "-"), ("*", "/", "%")]

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            kind, v, pos = self.toks[self.i]
            if kind != "op" or v not in self._LEVELS[level]:
                return left
            self.i += 1
            right = self.binary(level + 1)
            if v == "||":
                left = Node("or", pos, args=[left, right])
            elif v == "&&":
                left = Node("and", pos, args=[left, right])
            else:
                left = Node("binop", pos, name=v, args=[left, right])

    def unary(self) -> Node:
        kind, v, pos = self.toks[self.i]
        if kind == "op" and v == "!":
            self.i += 1
            return Node("not", pos, args=[self.unary()])
        if kind == "op" and v == "-":
            self.i += 1
            nk, nv, npos = self.toks[self.i]
            if nk == "intlit":  # -9223372036854775808 is a valid literal
                self.i += 1
                if -nv < INT64_MIN:
                    raise CELSyntaxError("Syntax error: invalid int literal", npos)
                return self.member(Node("lit", pos, value=-nv))
            return Node("neg", pos, args=[self.unary()])
        return self.member(self.primary())

    def args(self, close: str) -> list[Node]:
        out: list[Node] = []
        while not self.peek(close):
            out.append(self.expr())
            if not self.peek(close):
                self.take(",")
        self.take(close)
        return out

    def primary(self) -> Node:
        kind, v, pos = self.toks[self.i]
        self.i += 1
        if kind == "lit":
            return Node("lit", pos, value=v)
        if kind == "intlit":
            if v > INT64_MAX:
                raise CELSyntaxError("Syntax error: invalid int literal", pos)
            return Node("lit", pos, value=v)
        if kind == "ident":
            if self.peek("("):
                self.take("(")
                return self.global_call(str(v), pos, self.args(")"))
            return Node("ident", pos, name=str(v))
        if kind == "op" and v == ".":
            nk, nv, npos = self.toks[self.i]
            if nk == "ident":
                self.i += 1
                return Node("ident", npos, name=str(nv))
        if kind == "op" and v == "(":
            inner = self.expr()
            self.take(")")
            return inner
        if kind == "op" and v == "[":
            items = self.args("]") if not self.peek(",") else []
            return Node("list", pos, args=items)
        if kind == "op" and v == "{":
            entries: list[Node] = []
            while not self.peek("}"):
                entries.append(self.expr())
                self.take(":")
                entries.append(self.expr())
                if not self.peek("}"):
                    self.take(",")
            self.take("}")
            return Node("map", pos, args=entries)
        found = "<EOF>" if kind == "eof" else repr(str(v))
        raise CELSyntaxError(f"Syntax error: mismatched input {found} expecting an expression", pos)

    def member(self, node: Node) -> Node:
        while True:
            kind, v, pos = self.toks[self.i]
            if kind == "op" and v == ".":
                self.i += 1
                nk, name, npos = self.toks[self.i]
                if nk != "ident":
                    raise CELSyntaxError("Syntax error: no viable alternative at input '.'", npos)
                self.i += 1
                if self.peek("("):
                    self.take("(")
                    node = self.member_call(node, str(name), npos, self.args(")"))
                else:
                    node = Node("select", npos, name=str(name), args=[node])
            elif kind == "op" and v == "[":
                self.i += 1
                key = self.expr()
                self.take("]")
                node = Node("index", pos, args=[node, key])
            else:
                return node

    def global_call(self, name: str, pos: int, args: list[Node]) -> Node:
        if name == "has":
            if len(args) != 1 or args[0].kind != "select":
                raise CELSyntaxError("invalid argument to has() macro", pos)
            return Node("has", pos, name=args[0].name, args=[args[0].args[0]])
        return Node("call", pos, name=name, args=args)

    def member_call(self, target: Node, name: str, pos: int, args: list[Node]) -> Node:
        if name == "bind" and target.kind == "ident" and target.name == "cel" and len(args) == 3:
            return Node("bind", pos, var=self.var_name(args[0]), args=[args[1], args[2]])
        if name in _MACROS and len(args) == _MACROS[name] or name == "map" and len(args) in (2, 3):
            return Node("comp", pos, name=name, var=self.var_name(args[0]), args=[target, *args[1:]])
        if target.kind == "ident" and target.name in ("sets", "strings"):
            return Node("call", pos, name=f"{target.name}.{name}", args=args, value=target)
        return Node("call", pos, name=name, target=target, args=args)

    @staticmethod
    def var_name(node: Node) -> str:
        if node.kind != "ident":
            raise CELSyntaxError("argument must be a simple name", node.pos)
        return node.name


def parse(text: str) -> Node:
    """Parse one CEL expression into a tree of Nodes."""
    return _Parser(text).parse()
