"""The user guide matches the code: every command example runs (tools/check_docs.py),
every config key, command and option is documented, links resolve, the layer rule in
docs/layout.md is the one tests/test_layers.py checks."""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import subprocess
import sys

import pytest

from nodes import NODES
from stream.cli.main import parser
from stream.config.schema import DEFAULTS
from tests.support.paths import ROOT

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def sh_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of every ```sh block."""
    return re.findall(r"^```sh([^\n]*)\n(.*?)^```", text, re.S | re.M)


def test_every_page_is_linked_from_the_index_and_every_link_resolves():
    index = (DOCS / "README.md").read_text()
    for page in DOCS.glob("*.md"):
        if page.name != "README.md":
            assert f"({page.name})" in index, f"{page.name} is not in docs/README.md"
    for page in PAGES:
        for target, _ in LINK.findall(page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_examples_are_runnable_or_say_they_are_not():
    runnable = 0
    for page in PAGES:
        for info, body in sh_blocks(page.read_text()):
            assert info.strip() in ("", "no-check"), f"{page.name}: ```sh{info}"
            runnable += info.strip() == ""
            assert body.strip(), f"{page.name}: an empty sh block"
    assert runnable >= 20  # the guide shows how, it does not only describe


def documented_keys(text: str) -> dict[str, set[str]]:
    """The keys each [group] table of the ```toml blocks shows, by group."""
    keys: dict[str, set[str]] = {}
    for block in re.findall(r"^```toml\n(.*?)^```", text, re.S | re.M):
        group = None
        for line in block.splitlines():
            table = re.match(r"\[(\w+)\]\s*(#.*)?$", line)
            if table:
                group = table.group(1)
            elif line.startswith("[["):
                group = None
            elif group and (key := re.match(r"(\w+) = ", line)):
                keys.setdefault(group, set()).add(key.group(1))
    return keys


def test_every_config_key_is_in_configs_md():
    """Each group's keys in that group's table ([replay] trajectory passed as [source]'s)."""
    text = (DOCS / "configs.md").read_text()
    shown = documented_keys(text)
    missing = [f"[{group}] {key}" for group, table in DEFAULTS.items() for key in table
               if key not in shown.get(group, ())]
    for kind, cls in NODES.items():
        assert f'kind = "{kind}"' in text, kind
        for name, p in inspect.signature(cls.__init__).parameters.items():
            if p.kind is p.KEYWORD_ONLY and not re.search(rf"\b{name}\b", text):
                missing.append(f"[[node]] {kind}: {name}")
    assert not missing, f"not in docs/configs.md: {missing}"


def test_every_command_and_option_is_in_cli_md():
    text = (DOCS / "cli.md").read_text()
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    synopsis = re.search(r"^```text\n(.*?)^```", text, re.S | re.M).group(1)
    missing = []
    for name, command in sub.choices.items():
        if not re.search(rf"^peakstream {name}\b", synopsis, re.M):  # the block up top
            missing.append(name)
        for action in command._actions:
            options = [o for o in action.option_strings if o.startswith("--")]
            options = options or action.option_strings  # short ones only where no long one
            if options and options[0] != "-h" and "--help" not in options and not any(
                    re.search(rf"{re.escape(o)}\b", text) for o in options):
                missing.append(f"{name} {options[0]}")
    assert not missing, f"not in docs/cli.md: {missing}"


def test_the_layer_rule_in_layout_md_is_the_tested_one():
    tree = ast.parse((ROOT / "tests" / "test_layers.py").read_text())
    layers = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                  and any(getattr(t, "id", "") == "LAYERS" for t in n.targets))
    assert " < ".join(layers) in (DOCS / "layout.md").read_text()
    short = " < ".join(name.removeprefix("stream.") for name in layers)
    assert short in " ".join((ROOT / "README.md").read_text().split())
    for name in layers:  # and every layer has its line in the tree
        assert f"\n{name.replace('.', '/')}/" in (DOCS / "layout.md").read_text(), name


def test_every_header_key_kind_is_shown_in_replay_md():
    """header:KEY reads a header's own keys and the names of SPEC's pairs (motor_mne /
    motor_pos, counter_mne / counter_pos): replay.md shows each pair in an example the
    doc check runs (test_every_command_example_runs), reading a name through it."""
    from stream.sources.files.common import SPEC_PAIRS

    runnable = "".join(body for info, body in sh_blocks((DOCS / "replay.md").read_text())
                       if not info.strip())
    for names, values in SPEC_PAIRS:
        spelled = re.search(rf'"{names}": "([^"]+)", "{values}"', runnable)
        assert spelled, f"replay.md runs no example with {names} / {values}"
        assert any(f"=header:{name} " in runnable for name in spelled.group(1).split()), names


@pytest.mark.system
def test_every_command_example_runs():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "check_docs.py")], cwd=ROOT,
                       capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stdout[-20000:] + r.stderr[-5000:]


def test_the_daemon_session_waits_until_the_daemon_is_ready():
    """daemon.md's loop waited only for the end of `warming`: the daemon says `starting`
    after the warm-up while its source opens, so the loop could end with the data socket
    not bound. Its condition, run on each state."""
    text = (DOCS / "daemon.md").read_text()
    (condition,) = re.findall(r'python -c "(import json, sys; sys\.exit\([^"]*\[\'state\'\][^"]*)"',
                              text)
    for state, ready in (("starting", False), ("warming", False), ("idle", True),
                         ("running", True)):
        r = subprocess.run([sys.executable, "-c", condition], input=f'{{"state": "{state}"}}',
                           capture_output=True, text=True, timeout=60)
        assert (r.returncode == 0) == ready, (state, r.stderr)
