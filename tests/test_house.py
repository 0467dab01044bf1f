"""The house rules of the workflow's own files: each name defined once, imports at the top."""

from __future__ import annotations

import re
from collections import Counter

from conftest import REPO

WORKFLOW_FILES = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
DEFINITION = re.compile(r"^(?:def|rule|checkpoint)\s+(\w+)|^use rule \w+ as (\w+)", re.M)


def definitions() -> Counter:
    names = Counter()
    for path in WORKFLOW_FILES:
        for match in DEFINITION.finditer(path.read_text()):
            names[match.group(1) or match.group(2)] += 1
    return names


def test_no_function_or_rule_is_defined_twice():
    twice = sorted(name for name, count in definitions().items() if count > 1)
    assert not twice, f"defined more than once in Snakefile and rules/: {twice}"
    assert definitions()["get_group_input"] == 1  # the check sees definitions at all


def test_imports_come_first():
    for path in WORKFLOW_FILES:
        lines = path.read_text().splitlines()
        first_code = next((n for n, line in enumerate(lines) if re.match(r"(def|rule|checkpoint)\b", line)),
                          len(lines))  # fmt: skip
        late = [line for line in lines[first_code:] if re.match(r"(from \S+ )?import ", line)]
        assert not late, f"{path.name}: imports after the first definition: {late}"
