"""CEL device selectors. Cases marked "upstream:" are ported from
kubernetes/dynamic-resource-allocation cel/compile_test.go (the name is the upstream case name)."""

from decimal import Decimal

import pytest

from mlplane.policy.device.cel import (CELCompileError, CELRuntimeError, SelectorCache, Semver,
                                       compile_selector, device_view)

DRIVER = "dra.example.com"


def match(expression, attributes=None, capacity=None, driver=DRIVER, allow_multiple=False):
    return compile_selector(expression).matches(
        device_view(driver, attributes or {}, capacity or {}, allow_multiple))


UPSTREAM_MATCHES = [
    # (upstream case, expression, attributes, capacity, expected)
    ("true", "true", {}, {}, True),
    ("false", "false", {}, {}, False),
    ("domain-check-negative", '"no-such-domain" in device.attributes', {}, {}, False),
    ("domain-check-positive", '"dra.example.com" in device.attributes',
     {"dra.example.com/something": True}, {}, True),
    ("real-driver-name", 'device.driver == "dra.example.com"', {}, {}, True),
    ("driver-name-qualifier", 'device.attributes["dra.example.com"].name', {"name": True}, {}, True),
    ("driver-name-qualifier-map-lookup", 'device.attributes["dra.example.com"]["name"]',
     {"name": True}, {}, True),
    ("bind", 'cel.bind(dra, device.attributes["dra.example.com"], dra.name)', {"name": True}, {}, True),
    ("qualified-attribute-name", 'device.attributes["other.example.com"].name',
     {"other.example.com/name": True}, {}, True),
    ("int", 'device.attributes["dra.example.com"].name > 0', {"name": 1}, {}, True),
    ("string", 'device.attributes["dra.example.com"].name == "fish"', {"name": "fish"}, {}, True),
    ("version", 'device.attributes["dra.example.com"].name.isGreaterThan(semver("0.0.1"))',
     {"name": Semver.parse("1.0.0")}, {}, True),
    ("version_v", 'device.attributes["dra.example.com"].name.isGreaterThan(semver("v0.0.1", true)) '
     '&& isSemver("v1.0.0", true)', {"name": Semver.parse("1.0.0")}, {}, True),
    ("quantity", 'device.capacity["dra.example.com"].name.isGreaterThan(quantity("1Ki"))',
     {}, {"name": "1Mi"}, True),
    ("check-positive", '"name" in device.capacity["dra.example.com"] && '
     'device.capacity["dra.example.com"].name.isGreaterThan(quantity("1Ki"))', {}, {"name": "1Mi"}, True),
    ("check-negative", '!("name" in device.capacity["dra.example.com"]) || '
     'device.capacity["dra.example.com"].name.isGreaterThan(quantity("1Ki"))', {}, {}, True),
    ("many", 'device.attributes["dra.example.com"].a && device.attributes["dra.example.com"].b && '
     'device.attributes["dra.example.com"].c', {"a": True, "b": True, "c": True}, {}, True),
    ("check_attribute_domains", 'device.attributes.exists_one(x, x == "dra.example.com")',
     {"services": "some_example_value"}, {}, True),
    ("check_attribute_ids", 'device.attributes["dra.example.com"].exists_one(x, x == "services")',
     {"services": "some_example_value"}, {}, True),
    ("split_attribute", 'device.attributes["dra.example.com"].services.split("example").size() >= 2',
     {"services": "some_example_value"}, {}, True),
    ("regexp_attribute", 'device.attributes["dra.example.com"].services.matches("[^a]?sym")',
     {"services": "asymetric"}, {}, True),
    ("check_capacity_domains", 'device.capacity.exists_one(x, x == "dra.example.com")',
     {}, {"memory": "1Mi"}, True),
]


@pytest.mark.parametrize("case,expression,attributes,capacity,expected", UPSTREAM_MATCHES,
                         ids=[c[0] for c in UPSTREAM_MATCHES])
def test_upstream_match_cases(case, expression, attributes, capacity, expected):
    assert match(expression, attributes, capacity) is expected


def test_upstream_all_case_every_value_kind():
    # upstream: "all"
    expression = " && ".join([
        'device.capacity["dra.example.com"].quantity.isGreaterThan(quantity("1Ki"))',
        'device.attributes["dra.example.com"].bool',
        'device.attributes["dra.example.com"].int > 0',
        'device.attributes["dra.example.com"].string == "fish"',
        'device.attributes["dra.example.com"].version.isGreaterThan(semver("0.0.1"))',
        'device.capacity["dra.example.com"]["quantity"].isGreaterThan(quantity("1Ki"))',
        'device.attributes["dra.example.com"]["bool"]',
        'device.attributes["dra.example.com"]["version"].isGreaterThan(semver("0.0.1"))',
    ])
    attrs = {"bool": True, "int": 1, "string": "fish", "version": Semver.parse("1.0.0")}
    assert match(expression, attrs, {"quantity": "1Mi"}) is True
    assert match(expression, {**attrs, "int": 0}, {"quantity": "1Mi"}) is False


def test_empty_driver_name_matches_empty_string():
    # upstream: "empty-driver-name"
    assert match('device.driver == ""', driver="") is True
    assert match('device.driver == "gpu.example.com"') is False


@pytest.mark.parametrize("expression", [
    'device.attributes["no-such-domain"].noSuchAttr.isGreaterThan(quantity("0"))',  # upstream: runtime-error-lookup-identifier
    'device.attributes["no-such-domain"]["noSuchAttr"].isGreaterThan(quantity("0"))',  # upstream: runtime-error-lookup-map
])
def test_unknown_key_is_a_runtime_error_naming_the_expression(expression):
    with pytest.raises(CELRuntimeError) as err:
        match(expression)
    assert "no such key: noSuchAttr" in err.value.message
    assert expression in err.value.message


def test_unknown_domain_is_an_empty_map():
    assert match('device.attributes["x.example.com"].size() == 0') is True
    assert match('device.capacity["x.example.com"] == {}') is True


@pytest.mark.parametrize("expression,expected", [
    ("?!", "Syntax error"),  # upstream: syntax-error
    ("1", "must evaluate to bool or the unknown type, not int"),  # upstream: type-error
    ('device.attributes["dra.example.com"].name.includes("fish")', "undeclared reference to 'includes'"),
    ("device.nosuchfield", "undefined field 'nosuchfield'"),
    ('device.capacity["a"].memory > 1', "found no matching overload for '_>_'"),
    ('device.driver == 1', "found no matching overload for '_==_'"),
])
def test_compile_errors(expression, expected):
    with pytest.raises(CELCompileError) as err:
        compile_selector(expression)
    assert expected in err.value.message


def test_syntax_error_reports_line_and_column():
    with pytest.raises(CELCompileError) as err:
        compile_selector('device.driver == "a" &&')
    assert err.value.message.startswith("compilation failed: ERROR: <input>:1:24: Syntax error")
    assert err.value.position == 23
    with pytest.raises(CELCompileError) as err:
        compile_selector('device.driver\n  == @')
    assert "<input>:2:6:" in err.value.message


def test_non_bool_result_is_a_runtime_error():
    with pytest.raises(CELRuntimeError) as err:
        match('device.attributes["dra.example.com"].name', {"name": "fish"})
    assert "could not be converted to bool" in err.value.message


def test_logical_operators_absorb_errors_as_cel_does():
    missing = 'device.attributes["dra.example.com"].missing'
    assert match(f"{missing} || true") is True
    assert match(f"true || {missing}") is True
    assert match(f"{missing} && false") is False
    assert match(f"false && {missing}") is False
    with pytest.raises(CELRuntimeError, match="no such key: missing"):
        match(f"{missing} && true")
    with pytest.raises(CELRuntimeError, match="no such key: missing"):
        match(f"{missing} || false")
    assert match(f"false ? {missing} : true") is True


def test_has_macro_and_in_guard_unknown_keys():
    expr = ('has(device.attributes["dra.example.com"].memory) && '
            'device.attributes["dra.example.com"].memory >= 40')
    assert match(expr, {"memory": 80}) is True
    assert match(expr, {}) is False
    assert match('"memory" in device.attributes["dra.example.com"]', {"memory": 1}) is True
    assert match("has(device.driver)") is True


def test_exists_and_all_macros():
    assert match('["a", "b"].exists(x, x == device.attributes["dra.example.com"].t)', {"t": "b"}) is True
    assert match("[1, 2, 3].all(x, x > 0)") is True
    assert match("[1, 2, 3].all(x, x > 1)") is False
    # all: a false element wins over an error in another element; exists: a true one does
    assert match('[0, 1].all(x, 10 / x > 100)') is False
    assert match('[0, 1].exists(x, 10 / x == 10)') is True
    with pytest.raises(CELRuntimeError, match="division by zero"):
        match('[0, 1].all(x, 10 / x > 0)')
    # upstream: macro-exists-on-string (a scalar attribute is not iterable)
    with pytest.raises(CELRuntimeError, match="expected iterable type"):
        match('device.attributes["dra.example.com"].name.exists(x, x == "fish")', {"name": "fish"})
    assert match("[1, 2, 3].map(x, x * 2) == [2, 4, 6] && [1, 2, 3].filter(x, x > 1).size() == 2")


def test_quantity_library():
    caps = {"memory": "80Gi"}
    q = 'device.capacity["dra.example.com"].memory'
    assert match(f'{q}.compareTo(quantity("40Gi")) > 0', capacity=caps)
    assert match(f'{q}.compareTo(quantity("80Gi")) == 0', capacity=caps)
    assert match(f'{q}.isLessThan(quantity("100Gi"))', capacity=caps)
    assert match(f'{q}.isGreaterThan(quantity("100Gi"))', capacity=caps) is False
    assert match(f'{q}.sub(quantity("16Gi")).add(1).asInteger() == 68719476737', capacity=caps)
    assert match('quantity("1500m").isInteger() == false && quantity("1500m").asApproximateFloat() == 1.5')
    assert match('quantity("-1").sign() == -1 && isQuantity("2Gi") && !isQuantity("2GB")')
    with pytest.raises(CELRuntimeError, match="cannot convert value to integer"):
        match('quantity("1500m").asInteger() == 1')
    with pytest.raises(CELRuntimeError, match="quantities must match"):
        match('quantity("lots").sign() == 1')


def test_semver_library():
    attrs = {"driverVersion": Semver.parse("550.54.15"), "cuda": Semver.parse("12.4.0-rc.1")}
    v = 'device.attributes["dra.example.com"]'
    assert match(f"{v}.driverVersion.major() >= 550 && {v}.driverVersion.minor() == 54 "
                 f"&& {v}.driverVersion.patch() == 15", attrs)
    assert match(f'{v}.driverVersion.compareTo(semver("550.100.0")) == -1', attrs)
    assert match(f'{v}.cuda.isLessThan(semver("12.4.0"))', attrs)  # a pre-release sorts first
    assert match(f'{v}.cuda.isGreaterThan(semver("12.4.0-beta.9"))', attrs)
    assert match('semver("1.2", true) == semver("1.2.0") && !isSemver("01.2.3")')
    with pytest.raises(CELRuntimeError, match="could not parse semver"):
        match('semver("1.2").major() == 1')
    with pytest.raises(CELCompileError, match="found no matching overload for 'isGreaterThan'"):
        compile_selector('semver("1.0.0").isGreaterThan(quantity("1"))')


def test_strings_lists_regex_and_sets_libraries():
    attrs = {"productName": "NVIDIA H100 80GB HBM3"}
    p = 'device.attributes["dra.example.com"].productName'
    assert match(f'{p}.lowerAscii().contains("h100") && {p}.startsWith("NVIDIA")', attrs)
    assert match(f'{p}.find("[0-9]+GB") == "80GB" && {p}.findAll("[0-9]+").size() == 3', attrs)
    assert match('[3, 1, 2].max() == 3 && [3, 1, 2].min() == 1 && [1, 2, 3].sum() == 6 '
                 '&& [1, 2, 2].isSorted() && [1, 2, 2].lastIndexOf(2) == 2')
    assert match('sets.contains([1, 2, 3], [2]) && sets.intersects([1], [1, 5]) '
                 '&& !sets.equivalent([1], [2])')


def test_allow_multiple_allocations():
    # upstream: allow_multiple_allocations / allow_multiple_allocations_default
    assert match("device.allowMultipleAllocations == true", allow_multiple=True) is True
    assert match("device.allowMultipleAllocations == false") is True


def test_cost_limit_stops_runaway_comprehensions():
    # upstream: "expensive"
    ten = "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"
    expression = (f"{ten}.all(x, {ten}.all(y, {ten}.all(z, {ten}.all(z2, {ten}.all(z3, {ten}.all(z4, "
                  f"{ten}.all(z5, int('1'.find('[0-9]*')) < 100)))))))")
    with pytest.raises(CELRuntimeError, match="actual cost limit exceeded"):
        match(expression)


def test_cel_equality_is_typed():
    assert match("1 == 1.0 && 1u == 1") is True  # numbers compare across types
    assert match('device.attributes["dra.example.com"].flag == 1', {"flag": True}) is False
    assert match("[1, [2]] == [1, [2]] && {'a': 1} == {'a': 1}") is True


def test_int_overflow_and_division_are_errors():
    with pytest.raises(CELRuntimeError, match="integer overflow"):
        match("9223372036854775807 + 1 > 0")
    assert match("-7 / 2 == -3 && -7 % 2 == -1")


def test_device_view_rejects_bad_slice_data():
    with pytest.raises(ValueError, match="attribute gpu: unsupported attribute value"):
        device_view(DRIVER, {"gpu": 1.5}, {})
    with pytest.raises(ValueError, match="capacity memory:"):
        device_view(DRIVER, {}, {"memory": "lots"})
    view = device_view(DRIVER, {"a.example.com/x": 1, "y": "s"}, {"memory": "1Ki"})
    assert view.attributes == {"a.example.com": {"x": 1}, DRIVER: {"y": "s"}}
    assert view.capacity == {DRIVER: {"memory": Decimal(1024)}}


def test_cache_compiles_once_and_evicts_least_recently_used():
    cache = SelectorCache(max_size=2)
    first = cache.get("true")
    assert cache.get("true") is first
    cache.get("false")
    cache.get("true")
    cache.get("1 == 1")  # evicts "false", the least recently used
    assert len(cache) == 2 and cache.get("true") is first
    with pytest.raises(CELCompileError):
        cache.get("?!")
    with pytest.raises(CELCompileError):
        cache.get("?!")
