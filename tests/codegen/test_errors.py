"""Bad schemas: one case per error class, each asserting the whole output.

Every case runs `cbgen generate` in a scratch project and expects exit status 1,
exactly the listed `FILE:LINE:COL: message` lines, and no `generated/` folder.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .conftest import cbgen

HEAD = "cbus: 1\ndomain: orders\n"
OK_CMD = "commands:\n  Ping: {}\n"
DURATION = (
    "Expected a duration (whole seconds > 0, or `<int>s|m|h|d` such as `90s`, `12h`, `7d`) for "
)


def laughs(levels: int, under: str) -> str:
    """A "billion laughs" schema: `levels` lists of 9 aliases to the list before."""
    lines = [f"{under}:", '  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return HEAD + "\n".join(lines) + "\n" + OK_CMD


CASES: dict[str, tuple[dict[str, str | bytes], list[str]]] = {
    "yaml_syntax": (
        {"a.yaml": HEAD + "commands: [Ping\n"},
        ["schemas/a.yaml:4:1: Invalid YAML: expected ',' or ']', but got '<stream end>'"],
    ),
    "two_documents": (
        {"a.yaml": HEAD + OK_CMD + "---\ncbus: 1\n"},
        [
            "schemas/a.yaml:5:1: Invalid YAML: expected a single document in the stream, "
            "but found another document"
        ],
    ),
    "invalid_utf8": (
        {"a.yaml": (HEAD + 'description: "h\u00e9 ').encode() + b'\xff"\n' + OK_CMD.encode()},
        ["schemas/a.yaml:3:18: Invalid UTF-8: unexpected byte 0xff"],
    ),
    "nul_byte": (
        {"a.yaml": HEAD + "description: ab\x00c\n" + OK_CMD},
        [
            "schemas/a.yaml:3:16: Invalid YAML: unacceptable character #x0000: "
            "special characters are not allowed"
        ],
    ),
    "nul_byte_after_cr_line_breaks": (
        {"a.yaml": (HEAD + OK_CMD).replace("\n", "\r") + "x: \x00\r"},
        [
            "schemas/a.yaml:5:4: Invalid YAML: unacceptable character #x0000: "
            "special characters are not allowed"
        ],
    ),
    "alias": (
        {"a.yaml": HEAD + "description: &d Hello\ncommands:\n  Ping: {description: *d}\n"},
        ["schemas/a.yaml:5:23: YAML aliases are not supported: write out the value of `*d`"],
    ),
    "merge_key_alias": (
        {"a.yaml": HEAD + "types:\n  A: &a {fields: {x: int}}\n  B: {<<: *a}\n" + OK_CMD},
        ["schemas/a.yaml:5:11: YAML aliases are not supported: write out the value of `*a`"],
    ),
    "billion_laughs": (
        {"a.yaml": laughs(9, "commands")},
        ["schemas/a.yaml:5:12: YAML aliases are not supported: write out the value of `*l0`"],
    ),
    "billion_laughs_under_a_rejected_key": (
        {"a.yaml": laughs(9, "zzz")},
        ["schemas/a.yaml:5:12: YAML aliases are not supported: write out the value of `*l0`"],
    ),
    "recursive_alias": (
        {"a.yaml": HEAD + "x: &r [*r]\n" + OK_CMD},
        ["schemas/a.yaml:3:8: YAML aliases are not supported: write out the value of `*r`"],
    ),
    "duplicate_anchor": (
        {"a.yaml": HEAD + "a: &x 1\nb: &x 2\n" + OK_CMD},
        [
            "schemas/a.yaml:4:4: Invalid YAML: found duplicate anchor 'x'; "
            "first occurrence at 3:4, second occurrence here"
        ],
    ),
    "timestamp_tag": (
        {"a.yaml": HEAD + "description: !!timestamp x\n" + OK_CMD},
        ["schemas/a.yaml:3:14: Unsupported YAML tag `!!timestamp`: write the value untagged"],
    ),
    "bool_tag": (
        {"a.yaml": HEAD + "description: !!bool x\n" + OK_CMD},
        ["schemas/a.yaml:3:14: Unsupported YAML tag `!!bool`: write the value untagged"],
    ),
    "tags_on_collections_and_local_tags": (
        {"a.yaml": HEAD + "options: !!set {}\ncommands:\n  Ping: !ping {}\n"},
        [
            "schemas/a.yaml:3:10: Unsupported YAML tag `!!set`: write the value untagged",
            "schemas/a.yaml:5:9: Unsupported YAML tag `!ping`: write the value untagged",
        ],
    ),
    "str_tag_that_changes_the_value": (
        {"a.yaml": "cbus: !!str 1\ndomain: orders\n" + OK_CMD},
        ["schemas/a.yaml:1:7: Unsupported YAML tag `!!str`: write the value untagged"],
    ),
    "key_with_line_breaks_is_echoed_on_one_line": (
        {"a.yaml": HEAD + OK_CMD + '"a\\rb\\nc\\u2028": 1\n'},
        [
            "schemas/a.yaml:5:1: Unknown key `a\\rb\\nc\\u2028` (expected one of `cbus`, "
            "`domain`, `description`, `options`, `types`, `commands` or `schedules`)"
        ],
    ),
    "invalid_date": (
        {"a.yaml": HEAD + "description: 2024-13-45\n" + OK_CMD},
        ["schemas/a.yaml:3:14: Invalid scalar `2024-13-45`: month must be in 1..12"],
    ),
    "empty_file": (
        {"a.yaml": "# nothing\n"},
        ["schemas/a.yaml:1:1: Empty schema: expected a mapping with `cbus: 1`"],
    ),
    "duplicate_key": (
        {"a.yaml": HEAD + OK_CMD + "domain: payments\n"},
        ["schemas/a.yaml:5:1: Duplicate key `domain` (first defined at 2:1)"],
    ),
    "unknown_key_hint": (
        {"a.yaml": HEAD + "options: {max_attemps: 3}\n" + OK_CMD},
        ["schemas/a.yaml:3:11: Unknown key `max_attemps` (did you mean `max_attempts`?)"],
    ),
    "unknown_key_no_hint": (
        {"a.yaml": HEAD + OK_CMD + "zzz: 1\n"},
        [
            "schemas/a.yaml:5:1: Unknown key `zzz` (expected one of `cbus`, `domain`, "
            "`description`, `options`, `types`, `commands` or `schedules`)"
        ],
    ),
    "missing_format_version": (
        {"a.yaml": "domain: orders\n" + OK_CMD},
        ["schemas/a.yaml:1:1: Missing required key `cbus` (the format version: add `cbus: 1`)"],
    ),
    "unsupported_format_version": (
        {"a.yaml": "cbus: 2\ndomain: orders\n" + OK_CMD},
        ["schemas/a.yaml:1:7: Unsupported format version `2` (this cbgen reads `cbus: 1`)"],
    ),
    "missing_commands": (
        {"a.yaml": HEAD},
        ["schemas/a.yaml:1:1: Missing required key `commands`"],
    ),
    "no_commands": (
        {"a.yaml": HEAD + "commands: {}\n"},
        ["schemas/a.yaml:3:11: Expected at least one command in `commands`"],
    ),
    "bad_domain_name": (
        {"a.yaml": "cbus: 1\ndomain: Orders\n" + OK_CMD},
        ["schemas/a.yaml:2:9: Invalid domain name `Orders`: expected ^[a-z][a-z0-9_]{0,29}$"],
    ),
    "bad_command_name": (
        {"a.yaml": HEAD + "commands:\n  create_order: {}\n"},
        ["schemas/a.yaml:4:3: Invalid command name `create_order`: expected ^[A-Z][A-Za-z0-9]*$"],
    ),
    "bad_type_name": (
        {"a.yaml": HEAD + "types:\n  money: {enum: [a]}\n" + OK_CMD},
        ["schemas/a.yaml:4:3: Invalid type name `money`: expected ^[A-Z][A-Za-z0-9]*$"],
    ),
    "keyword_names": (
        {"a.yaml": HEAD + "types:\n  None: {enum: [a]}\ncommands:\n  'True': {}\n  False: {}\n"},
        [
            "schemas/a.yaml:4:3: Type name `None` is a Python keyword",
            "schemas/a.yaml:6:3: Command name `True` is a Python keyword",
            "schemas/a.yaml:7:3: Command name `False` is a Python keyword",
        ],
    ),
    "builtin_names": (
        {
            "a.yaml": HEAD
            + "types:\n  NotImplementedError: {fields: {x: int}}\n"
            + "commands:\n  ValueError:\n    fields: {e: NotImplementedError}\n"
        },
        [
            "schemas/a.yaml:4:3: Type name `NotImplementedError` is reserved: "
            "it would shadow the Python builtin `NotImplementedError`",
            "schemas/a.yaml:6:3: Command name `ValueError` is reserved: "
            "it would shadow the Python builtin `ValueError`",
        ],
    ),
    "bad_field_name": (
        {"a.yaml": HEAD + "commands:\n  Ping:\n    fields: {OrderId: uuid}\n"},
        ["schemas/a.yaml:5:14: Invalid field name `OrderId`: expected ^[a-z][a-z0-9_]*$"],
    ),
    "keyword_field": (
        {"a.yaml": HEAD + "commands:\n  Ping:\n    fields: {class: int}\n"},
        ["schemas/a.yaml:5:14: Field name `class` is a Python keyword"],
    ),
    "sender_parameter_field": (
        {"a.yaml": HEAD + "commands:\n  Ping:\n    fields: {reply_to: string}\n"},
        [
            "schemas/a.yaml:5:14: Field name `reply_to` is reserved: "
            "it is a parameter of every generated sender"
        ],
    ),
    "shadowing_field": (
        {"a.yaml": HEAD + "commands:\n  Ping:\n    fields: {list: int}\n"},
        [
            "schemas/a.yaml:5:14: Field name `list` is reserved: "
            "it would shadow `list` in the generated code"
        ],
    ),
    "unknown_type_hint": (
        {
            "a.yaml": HEAD
            + "types:\n  Money: {fields: {amount: decimal}}\n"
            + "commands:\n  Ping:\n    fields: {total: Mony, n: integer}\n"
        },
        [
            "schemas/a.yaml:7:21: Unknown type `Mony` (did you mean `Money`?)",
            "schemas/a.yaml:7:30: Unknown type `integer` (did you mean `int`?)",
        ],
    ),
    "unknown_domain_hint": (
        {
            "a.yaml": HEAD + "types:\n  Money: {fields: {amount: decimal}}\n" + OK_CMD,
            "b.yaml": "cbus: 1\ndomain: payments\ncommands:\n  Pay:\n"
            "    fields: {total: order.Money}\n",
        },
        [
            "schemas/b.yaml:5:21: Unknown domain `order` in type `order.Money` "
            "(did you mean `orders`?)"
        ],
    ),
    "unknown_domain_pass_its_file": (
        {"a.yaml": HEAD + "commands:\n  Ping:\n    fields: {total: payments.Money}\n"},
        [
            "schemas/a.yaml:5:21: Unknown domain `payments` in type `payments.Money` "
            "(pass the schema file that defines `payments`, or its folder, too)"
        ],
    ),
    "bad_type_syntax": (
        {"a.yaml": HEAD + 'commands:\n  Ping:\n    fields: {a: "dict[int, string]"}\n'},
        [
            "schemas/a.yaml:5:17: Invalid type `dict[int, string]`: "
            "dict keys must be `string`, got `int`"
        ],
    ),
    "cyclic_by_value": (
        {
            "a.yaml": HEAD
            + 'types:\n  A: {fields: {b: B}}\n  B: {fields: {a: A, ok: "A?"}}\n'
            + OK_CMD
        },
        [
            "schemas/a.yaml:4:16: Type `A` contains itself by value: `A.b` -> `B.a` -> `A` "
            "(make one field optional, a list or a dict)"
        ],
    ),
    # Domains may refer to each other (tests/codegen/test_cycles.py), not hold each
    # other by value: `A` would contain a `B` that contains an `A`, without end.
    "cyclic_by_value_across_domains": (
        {
            "a.yaml": HEAD + "types:\n  A: {fields: {b: payments.B}}\n" + OK_CMD,
            "b.yaml": "cbus: 1\ndomain: payments\ntypes:\n"
            + '  B: {fields: {a: orders.A, ok: "list[orders.A]"}}\n'
            + OK_CMD,
        },
        [
            "schemas/a.yaml:4:16: Type `A` contains itself by value: `A.b` -> `payments.B.a` "
            "-> `A` (make one field optional, a list or a dict)"
        ],
    ),
    "duplicate_domain": (
        {"a.yaml": HEAD + OK_CMD, "b.yaml": HEAD + OK_CMD},
        ["schemas/b.yaml:2:9: Duplicate domain `orders` (first defined at schemas/a.yaml:2:9)"],
    ),
    "duplicate_command": (
        {"a.yaml": HEAD + "commands:\n  Ping: {}\n  Ping: {version: 2}\n"},
        ["schemas/a.yaml:5:3: Duplicate key `Ping` (first defined at 4:3)"],
    ),
    "colliding_names": (
        {"a.yaml": HEAD + "commands:\n  HttpPing: {}\n  HTTPPing: {}\n"},
        [
            "schemas/a.yaml:5:3: Command `HTTPPing` becomes `http_ping`, as does command "
            "`HttpPing` (at 4:3)"
        ],
    ),
    "generated_functions_collide": (
        {
            "a.yaml": HEAD + "commands:\n  WaitFoo: {}\n  FooResult: {}\n",
            "b.yaml": "cbus: 1\ndomain: payments\ncommands:\n  SendFoo: {}\n  FooResult: {}\n",
        },
        [
            "schemas/a.yaml:5:3: Command `FooResult` becomes `wait_foo_result`, "
            "as does command `WaitFoo` (at 4:3)",
            "schemas/b.yaml:5:3: Command `FooResult` becomes `send_foo_result`, "
            "as does command `SendFoo` (at 4:3)",
        ],
    ),
    "names_hiding_modules_in_class_bodies": (
        {"a.yaml": HEAD + "commands:\n  Cbus: {}\n  Ping: {errors: [TYPING]}\n"},
        [
            "schemas/a.yaml:4:3: Command `Cbus` becomes the method `cbus`, which would hide "
            "the module `cbus` in the handler stubs",
            "schemas/a.yaml:5:3: Error code `TYPING` of `Ping` is reserved: its method `typing` "
            "would hide a Python keyword, an exception attribute or a module",
        ],
    ),
    "default_of_wrong_type": (
        {"a.yaml": HEAD + "commands:\n  Ping:\n    fields: {n: {type: int, default: many}}\n"},
        ["schemas/a.yaml:5:38: Invalid default for `n`: Expected `int`, got `str`"],
    ),
    "default_of_a_collection_for_a_scalar": (
        {
            "a.yaml": HEAD
            + "commands:\n  Ping:\n    fields:\n"
            + "      i: {type: int, default: [1]}\n"
            + "      s: {type: string, default: {a: 1}}\n"
        },
        [
            "schemas/a.yaml:6:31: Invalid default for `i`: Expected `int`, got `list`",
            "schemas/a.yaml:7:34: Invalid default for `s`: Expected `string`, got `mapping`",
        ],
    ),
    "default_of_a_struct_with_an_unknown_field_type": (
        {
            "a.yaml": HEAD
            + "types:\n  T: {fields: {v: Nope}}\n"
            + "commands:\n  Ping:\n    fields: {t: {type: T, default: {v: 1}}}\n"
        },
        ["schemas/a.yaml:4:19: Unknown type `Nope`"],
    ),
    "default_of_an_enum_without_valid_values": (
        {
            "a.yaml": HEAD
            + "types:\n  E: {enum: [bad-value]}\n"
            + "commands:\n  Ping:\n    fields: {e: {type: E, default: x}}\n"
        },
        ["schemas/a.yaml:4:14: Invalid enum value `bad-value`: expected ^[A-Za-z][A-Za-z0-9_]*$"],
    ),
    "default_that_builds_itself": (
        {
            "a.yaml": HEAD
            + "types:\n  Node:\n    fields:\n      name: string\n"
            + '      kids: {type: "list[Node]", default: [{name: leaf}]}\n'
            + OK_CMD
        },
        [
            "schemas/a.yaml:7:43: Invalid default for `kids`: it builds a `Node` whose `kids` "
            "default builds another, without end (give `kids` in the default, or make it empty)"
        ],
    ),
    "non_finite_floats": (
        {
            "a.yaml": HEAD
            + "commands:\n  Ping:\n    fields:\n"
            + "      f: {type: float, default: .nan}\n"
            + "      g: {type: float, ge: -.inf}\n"
        },
        [
            "schemas/a.yaml:6:33: Invalid default for `f`: Expected a finite `float`, "
            "got `.nan` (JSON has no NaN or infinity)",
            "schemas/a.yaml:7:28: Expected a finite number for `ge`, got `-.inf`",
        ],
    ),
    "bound_outside_int64": (
        {
            "a.yaml": HEAD
            + "commands:\n  Ping:\n    fields: {i: {type: int, le: 99999999999999999999999}}\n"
        },
        [
            "schemas/a.yaml:5:33: Expected `int` from -2**63 to 2**63 - 1 for `le`, "
            "got `99999999999999999999999` (msgspec bounds are 64-bit)"
        ],
    ),
    "default_in_a_dict": (
        {
            "a.yaml": HEAD
            + 'commands:\n  Ping:\n    fields: {d: {type: "dict[string, int]", default: {k: x}}}\n'
        },
        ["schemas/a.yaml:5:58: Invalid default for `d`: Expected `int`, got `str` at `k`"],
    ),
    "default_outside_constraints": (
        {
            "a.yaml": HEAD
            + "commands:\n  Ping:\n    fields:\n"
            + "      n: {type: int, ge: 1, default: 0}\n"
            + "      s: {type: string, pattern: '^[A-Z]+$', default: abc}\n"
        },
        [
            "schemas/a.yaml:6:38: Invalid default for `n`: Expected `int` >= 1, got `0`",
            "schemas/a.yaml:7:55: Invalid default for `s`: "
            "Expected `str` matching `^[A-Z]+$`, got `abc`",
        ],
    ),
    "default_not_in_enum": (
        {
            "a.yaml": HEAD
            + "types:\n  Priority: {enum: [low, normal]}\n"
            + "commands:\n  Ping:\n    fields: {p: {type: Priority, default: norml}}\n"
        },
        [
            "schemas/a.yaml:7:43: Invalid default for `p`: Expected one of `low` or `normal`, "
            "got `norml` (did you mean `normal`?)"
        ],
    ),
    "constraint_on_wrong_type": (
        {
            "a.yaml": HEAD
            + "commands:\n  Ping:\n    fields:\n"
            + "      a: {type: string, ge: 1}\n"
            + "      b: {type: int, min_length: 1}\n"
            + "      c: {type: decimal, gt: 0}\n"
            + '      d: {type: "list[int]", pattern: x}\n'
        },
        [
            "schemas/a.yaml:6:29: Constraint `ge` applies to `int` or `float`, not `string`",
            "schemas/a.yaml:7:34: Constraint `min_length` applies to `string`, `bytes`, "
            "`list` or `dict`, not `int`",
            "schemas/a.yaml:8:30: Constraint `gt` applies to `int` or `float`, not `decimal` "
            "(msgspec cannot bound decimals)",
            "schemas/a.yaml:9:39: Constraint `pattern` applies to `string`, not `list[int]`",
        ],
    ),
    "bad_pattern": (
        {"a.yaml": HEAD + "commands:\n  Ping:\n    fields: {s: {type: string, pattern: '('}}\n"},
        [
            "schemas/a.yaml:5:41: Invalid regular expression for `pattern`: "
            "missing ), unterminated subpattern at position 0"
        ],
    ),
    "bad_error_code": (
        {"a.yaml": HEAD + "commands:\n  Ping:\n    errors: [out_of_stock, OK, OK]\n"},
        [
            "schemas/a.yaml:5:14: Invalid error code `out_of_stock`: expected ^[A-Z][A-Z0-9_]*$",
            "schemas/a.yaml:5:32: Duplicate error code `OK` (first defined at 5:28)",
        ],
    ),
    "bad_options": (
        {
            "a.yaml": HEAD
            + "options: {max_attempts: 0, backoff: [1, -1], visibility_timeout: soon}\n"
            + OK_CMD
        },
        [
            "schemas/a.yaml:3:25: Expected `int` >= 1 for `max_attempts`, got `0`",
            "schemas/a.yaml:3:41: Expected a number >= 0 for `backoff`, got `-1`",
            "schemas/a.yaml:3:66: Expected `int` >= 1 for `visibility_timeout`, got `str`",
        ],
    ),
    "bad_timeout": (
        {
            "a.yaml": HEAD
            + "options: {timeout: 0}\n"
            + "commands:\n  Ping: {options: {timeout: soon}}\n  Pong: {options: {timeout: -1.5}}\n"
            + "  Pang: {options: {timeout: .inf}}\n  Peng: {options: {timeout: true}}\n"
        },
        [
            "schemas/a.yaml:3:20: Expected seconds > 0 for `timeout`, got `0`",
            "schemas/a.yaml:5:29: Expected seconds > 0 for `timeout`, got `str`",
            "schemas/a.yaml:6:29: Expected seconds > 0 for `timeout`, got `-1.5`",
            "schemas/a.yaml:7:29: Expected seconds > 0 for `timeout`, got `.inf`",
            "schemas/a.yaml:8:29: Expected seconds > 0 for `timeout`, got `bool`",
        ],
    ),
    "bad_priority": (
        {
            "a.yaml": HEAD
            + "options: {priority: 10}\ncommands:\n  Ping: {options: {priority: -1}}\n"
        },
        [
            "schemas/a.yaml:3:21: Expected `int` from 0 to 9 for `priority`, got `10`",
            "schemas/a.yaml:5:30: Expected `int` >= 0 for `priority`, got `-1`",
        ],
    ),
    "ordering_key_names_no_field": (
        {
            "a.yaml": HEAD
            + "commands:\n  Ping:\n    fields: {id: int}\n    options: {ordering_key: idd}\n"
        },
        [
            "schemas/a.yaml:6:29: `ordering_key` names no field of command `Ping`: `idd` "
            "(did you mean `id`?)"
        ],
    ),
    "domain_ordering_key_missing_in_a_command": (
        {
            "a.yaml": HEAD
            + "options: {ordering_key: order_id}\ncommands:\n"
            + "  Place: {fields: {order_id: uuid}}\n  Ping: {}\n"
            + "  Own: {fields: {x: int}, options: {ordering_key: x}}\n"
        },
        [
            "schemas/a.yaml:3:25: `ordering_key` names no field of command `Ping`: `order_id` "
            "(give it the field, or set `ordering_key` in its options)"
        ],
    ),
    "ordering_key_list_field": (
        {
            "a.yaml": HEAD
            + 'commands:\n  Ping:\n    fields: {ids: "list[int]"}\n'
            + "    options: {ordering_key: ids}\n"
        },
        [
            "schemas/a.yaml:6:29: `ordering_key` `ids` of command `Ping` is `list[int]`: a key "
            "must be a string, int, uuid, enum, bool, date or decimal field "
            "(a list has no stable text form)"
        ],
    ),
    "domain_ordering_key_struct_field": (
        {
            "a.yaml": HEAD
            + "options: {ordering_key: k}\ntypes:\n  Kind: {enum: [a, b]}\n"
            + "  Money: {fields: {amount: decimal}}\n"
            + "commands:\n  Ok: {fields: {k: Kind}}\n  Ping: {fields: {k: Money}}\n"
        },
        [
            "schemas/a.yaml:3:25: `ordering_key` `k` of command `Ping` is `Money`: a key "
            "must be a string, int, uuid, enum, bool, date or decimal field "
            "(a struct has no stable text form)"
        ],
    ),
    "ordering_key_float_field": (
        {
            "a.yaml": HEAD
            + "commands:\n  Ping:\n    fields: {x: float}\n    options: {ordering_key: x}\n"
        },
        [
            "schemas/a.yaml:6:29: `ordering_key` `x` of command `Ping` is `float`: a key "
            "must be a string, int, uuid, enum, bool, date or decimal field "
            "(a float's text form is not exact)"
        ],
    ),
    "ordering_key_nullable_field": (
        {
            "a.yaml": HEAD
            + "commands:\n  Ping:\n    fields: {x: string?}\n    options: {ordering_key: x}\n"
        },
        [
            "schemas/a.yaml:6:29: `ordering_key` `x` of command `Ping` is `string?`: a key "
            "must be a string, int, uuid, enum, bool, date or decimal field "
            "(a nullable field may have no value)"
        ],
    ),
    "ordering_key_not_text": (
        {"a.yaml": HEAD + "commands:\n  Ping: {options: {ordering_key: [a]}}\n"},
        ["schemas/a.yaml:4:34: Expected `str` for `ordering_key` (a field name), got `list`"],
    ),
    "cbus_priority_field": (
        {"a.yaml": HEAD + "commands:\n  Ping: {fields: {priority: int, cbus_priority: int}}\n"},
        [
            "schemas/a.yaml:4:34: Field name `cbus_priority` is reserved: it is the sender's "
            "priority argument when a command has a field named `priority`"
        ],
    ),
    "bad_rate_limit": (
        {
            "a.yaml": HEAD
            + 'options: {rate_limit: "10/d"}\ncommands:\n  Ping: {options: {rate_limit: 0/s}}\n'
        },
        [
            "schemas/a.yaml:3:23: Expected a rate such as `100/s`, `5/m` or `1/h` (a positive "
            "integer count) for `rate_limit`, got `10/d`",
            "schemas/a.yaml:5:32: Expected a rate such as `100/s`, `5/m` or `1/h` (a positive "
            "integer count) for `rate_limit`, got `0/s`",
        ],
    ),
    "bad_retention": (
        {
            "a.yaml": HEAD
            + "options:\n  retention:\n    completed: 0\n    failed: -5h\n    canceled: 3w\n"
            + "    audit: 1.5\n    archive: 10x\n    kept: 1d\ncommands:\n"
            + "  Ping: {options: {retention: {completed: 0s}}}\n"
            + "  Pong: {options: {retention: 7d}}\n"
            + "  Pang: {options: {retention: {failed: true, audit: null}}}\n"
        },
        [
            f"schemas/a.yaml:5:16: {DURATION}`retention.completed`, got `0`",
            f"schemas/a.yaml:6:13: {DURATION}`retention.failed`, got `-5h`",
            f"schemas/a.yaml:7:15: {DURATION}`retention.canceled`, got `3w`",
            f"schemas/a.yaml:8:12: {DURATION}`retention.audit`, got `1.5`",
            f"schemas/a.yaml:9:14: {DURATION}`retention.archive`, got `10x`",
            "schemas/a.yaml:10:5: Unknown key `kept` (expected one of `completed`, `failed`, "
            "`canceled`, `audit` or `archive`)",
            f"schemas/a.yaml:12:43: {DURATION}`retention.completed`, got `0s`",
            "schemas/a.yaml:13:31: Expected `mapping` for `retention`, got `str`",
            f"schemas/a.yaml:14:40: {DURATION}`retention.failed`, got `true`",
            f"schemas/a.yaml:14:53: {DURATION}`retention.audit`, got `null`",
        ],
    ),
    "retention_typo": (
        {"a.yaml": HEAD + "options: {retention: {complete: 1d}}\n" + OK_CMD},
        ["schemas/a.yaml:3:23: Unknown key `complete` (did you mean `completed`?)"],
    ),
    "rate_limit_not_text": (
        {"a.yaml": HEAD + "commands:\n  Ping: {options: {rate_limit: 100}}\n"},
        [
            "schemas/a.yaml:4:32: Expected a rate such as `100/s`, `5/m` or `1/h` (a positive "
            "integer count) for `rate_limit`, got `int`"
        ],
    ),
    "rate_limit_key_without_rate_limit": (
        {
            "a.yaml": HEAD
            + "commands:\n  Ping:\n    fields: {k: string}\n    options: {rate_limit_key: k}\n"
        },
        [
            "schemas/a.yaml:6:31: `rate_limit_key` without a `rate_limit`: command `Ping` has "
            'none (add `rate_limit: "N/s"`, `/m` or `/h`)'
        ],
    ),
    "rate_limit_key_names_no_field": (
        {
            "a.yaml": HEAD
            + "commands:\n  Ping:\n    fields: {k: string}\n"
            + "    options: {rate_limit: 5/m, rate_limit_key: kk}\n"
        },
        [
            "schemas/a.yaml:6:48: `rate_limit_key` names no field of command `Ping`: `kk` "
            "(did you mean `k`?)"
        ],
    ),
    "domain_rate_limit_key_missing_in_a_command": (
        {
            "a.yaml": HEAD
            + 'options: {rate_limit: "5/s", rate_limit_key: account}\ncommands:\n'
            + "  Ping: {fields: {n: int}}\n  Own: {fields: {account: string}}\n"
        },
        [
            "schemas/a.yaml:3:46: `rate_limit_key` names no field of command `Ping`: `account` "
            "(give it the field, or set `rate_limit_key` in its options)"
        ],
    ),
    "rate_limit_key_bytes_field": (
        {
            "a.yaml": HEAD
            + "commands:\n  Ping:\n    fields: {k: bytes}\n"
            + "    options: {rate_limit: 5/m, rate_limit_key: k}\n"
        },
        [
            "schemas/a.yaml:6:48: `rate_limit_key` `k` of command `Ping` is `bytes`: a key "
            "must be a string, int, uuid, enum, bool, date or decimal field "
            "(bytes have no text form)"
        ],
    ),
    "bad_unknown_version_grace": (
        {"a.yaml": HEAD + "options: {unknown_version_grace: 0}\n" + OK_CMD},
        ["schemas/a.yaml:3:34: Expected seconds > 0 for `unknown_version_grace`, got `0`"],
    ),
    "bad_version": (
        {"a.yaml": HEAD + "commands:\n  Ping: {version: 0}\n"},
        ["schemas/a.yaml:4:19: Expected `int` >= 1 for `version`, got `0`"],
    ),
    "enum_members_collide": (
        {"a.yaml": HEAD + "types:\n  P: {enum: [low, LOW]}\n" + OK_CMD},
        ["schemas/a.yaml:4:19: Enum value `LOW` repeats member `LOW` (first defined at 4:14)"],
    ),
    "null_default_of_a_type_that_is_not_nullable": (
        {
            "a.yaml": HEAD
            + "commands:\n  Ping:\n    fields:\n"
            + "      n: {type: int, default: null}\n"
            + '      l: {type: "list[int]", default: [null]}\n'
        },
        [
            "schemas/a.yaml:6:31: Invalid default for `n`: Expected `int`, got `null`",
            "schemas/a.yaml:7:40: Invalid default for `l`: Expected `int`, got `null` at `[0]`",
        ],
    ),
    "nullable_mutable_default": (
        {
            "a.yaml": HEAD
            + 'commands:\n  Ping:\n    fields: {t: {type: "list[int]?", default: [1]}}\n'
        },
        [
            "schemas/a.yaml:5:47: Invalid default for `t`: a nullable field's default must be "
            "null or a string, number, bool, enum, decimal or date/time value"
        ],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_schema(project: Path, case: str) -> None:
    files, expected = CASES[case]
    for name, text in files.items():
        path = project / "schemas" / name
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    r = cbgen("generate")
    n = len(expected)
    summary = f"{n} error{'s' if n != 1 else ''}; nothing written"
    assert (r.exit_code, r.stderr) == (1, "\n".join([*expected, summary]) + "\n")
    assert r.stdout == ""
    assert not (project / "generated").exists()


def test_every_error_is_reported_at_once(project: Path) -> None:
    (project / "schemas" / "a.yaml").write_text(
        "cbus: 1\ndomain: orders\noptions: {retries: 1}\ncommands:\n"
        "  Ping:\n    fields: {class: int, total: Mony}\n    errors: [bad]\n"
    )
    r = cbgen("generate")
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        "schemas/a.yaml:3:11: Unknown key `retries` (expected one of `max_attempts`, "
        "`backoff`, `visibility_timeout`, `timeout`, `unknown_version_grace`, `priority`, "
        "`ordering_key`, `rate_limit`, `rate_limit_key` or `retention`)",
        "schemas/a.yaml:6:14: Field name `class` is a Python keyword",
        "schemas/a.yaml:6:33: Unknown type `Mony`",
        "schemas/a.yaml:7:14: Invalid error code `bad`: expected ^[A-Z][A-Z0-9_]*$",
        "4 errors; nothing written",
    ]


def test_billion_laughs_is_refused_fast(project: Path) -> None:
    """Expanded, this 9-level file is 9**9 strings: it took 36 s and 1.6 GB before."""
    text = laughs(9, "zzz")
    assert len(text) < 700
    (project / "schemas" / "a.yaml").write_text(text)
    start = time.perf_counter()
    r = cbgen("generate")
    assert r.exit_code == 1
    assert time.perf_counter() - start < 2.0
