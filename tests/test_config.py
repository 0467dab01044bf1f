"""The config file is the manual: every setting is in it, commented, with its schema default,
and config/README.md describes each one."""

from __future__ import annotations

import re

import yaml

from conftest import REPO

SCHEMA = yaml.safe_load((REPO / "config/schemas/config.schema.yaml").read_text())["properties"]


def test_every_setting_is_in_config_yaml_with_its_default_and_a_comment():
    text = (REPO / "config/config.yaml").read_text()
    values = yaml.safe_load(text)
    assert set(values) == set(SCHEMA)
    for key, spec in SCHEMA.items():
        assert values[key] == spec["default"], key
        assert spec["description"].strip(), key
        line = re.search(rf"^{key}:.*$", text, re.MULTILINE).group(0)
        commented_above = re.search(rf"#.*\n{key}:", text)
        assert "#" in line or commented_above, f"{key} has no comment"


def test_config_readme_describes_every_setting_and_column():
    readme = (REPO / "config/README.md").read_text()
    for key in SCHEMA:
        assert f"| `{key}` |" in readme, key
    columns = yaml.safe_load((REPO / "config/schemas/reference_files.schema.yaml").read_text())["properties"]
    for column in columns:
        assert f"`{column}`" in readme, column


def test_the_catalog_file_is_there():
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    assert "mandatory-flags" in catalog["usage"]
