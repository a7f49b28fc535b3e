"""completions/, man/ and docs/settings.md are generated from the app and the registry, and must not go stale."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import gen_docs  # noqa: E402

from mailguard.settings import REGISTRY  # noqa: E402


@pytest.fixture(scope="module")
def rendered():
    return gen_docs.render()


@pytest.mark.parametrize("relative", sorted(gen_docs.OUTPUTS))
def test_committed_file_is_current(relative, rendered):
    committed = (ROOT / relative).read_text()
    assert committed == rendered[relative], f"{relative} is stale: run '.venv/bin/python tools/gen_docs.py'"


def test_man_page_documents_every_key_with_its_default(rendered):
    page = rendered["man/mailguard.1"]
    for key, setting in REGISTRY.items():
        roff_key = key.replace("-", "\\-")
        assert f".B {roff_key}\n" in page
        default = (setting.format(setting.default) or "(empty)").replace("-", "\\-")
        assert f"default {default}." in page


def test_man_page_documents_every_command(rendered):
    page = rendered["man/mailguard.1"]
    tree = gen_docs.collect(gen_docs.typer.main.get_command(gen_docs.app), ["mailguard"])
    leaves = [node for node in gen_docs.walk(tree) if not node.subcommands and node is not tree]
    assert len(leaves) >= 11
    for node in leaves:
        assert f".B {gen_docs._roff(node.usage)}" in page


def test_completions_know_every_key(rendered):
    for name in ("completions/mailguard.bash", "completions/mailguard.zsh", "completions/mailguard.fish"):
        for key in REGISTRY:
            assert key in rendered[name]


def test_bash_completion_is_valid_and_completes(tmp_path):
    bash = shutil.which("bash")
    script = ROOT / "completions/mailguard.bash"
    probe = (f"source {script}; COMP_WORDS=(mailguard ports add 993 --pro); COMP_CWORD=4; _mailguard; "
             "echo \"${COMPREPLY[*]}\"; COMP_WORDS=(mailguard config get web-and-email.ssl-tls.bl); COMP_CWORD=3; "
             "_mailguard; echo \"${COMPREPLY[*]}\"")
    out = subprocess.run([bash, "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["--protocol", "web-and-email.ssl-tls.block-obsolete"]


def test_settings_document_lists_every_key_with_type_and_default(rendered):
    page = rendered["docs/settings.md"]
    for key, setting in REGISTRY.items():
        rows = [line for line in page.splitlines() if line.startswith(f"| `{key}` |")]
        assert len(rows) == 1, f"{key} is not listed exactly once in docs/settings.md"
        cells = [cell.strip() for cell in rows[0].strip("|").split(" | ")]
        default = setting.format(setting.default)
        assert cells[1] == setting.type.name
        assert cells[2] == (f"`{default}`" if default else "(empty)")
        for choice in getattr(setting.type, "choices", ()):
            assert f"`{choice}`" in cells[3]
