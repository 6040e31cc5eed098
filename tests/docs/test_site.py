"""The documentation site builds strictly (a broken link or anchor, a page left out of the nav, a setting
without its help all fail it), and its generated reference pages hold every setting and every verb."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys

import pytest
import typer

from tests.docs.blocks import REPO, TOOLS

pytest.importorskip("mkdocs")
pytest.importorskip("material")


def _build(out, config=REPO / "mkdocs.yml"):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    argv = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(out)]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _text(page) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    run = _build(out)
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def test_every_bot_setting_is_in_the_configuration_reference_with_its_help(site):
    from bot.config import Settings

    page = "".join(_text(site / "configuration" / "index.html").split())
    for name, field in Settings.model_fields.items():
        assert f"STORY_BOT_{name.upper()}" in page, name
        assert "".join(field.description.replace("`", "").split()) in page, name


def test_every_verb_and_flag_is_in_the_command_line_reference(site):
    import importlib

    page = _text(site / "cli" / "index.html")

    def walk(command, path):
        subcommands = getattr(command, "commands", {})
        if not subcommands or command.invoke_without_command:
            assert path in page, path
            for param in command.params:
                for opt in [] if getattr(param, "hidden", False) else param.opts:
                    if opt.startswith("--") and opt not in (
                        "--help",
                        "--install-completion",
                        "--show-completion",
                    ):
                        assert opt in page, f"{path} {opt}"
        for name, sub in subcommands.items():
            walk(sub, f"{path} {name}")

    for tool, module in TOOLS.items():
        walk(typer.main.get_command(importlib.import_module(module).app), tool)


def test_a_broken_link_fails_the_build(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(
        "# Home\n\nSee [the bot](bot.md#no-such-section) and [a page](nowhere.md).\n"
    )
    (docs / "bot.md").write_text("# The bot\n")
    config = tmp_path / "mkdocs.yml"
    main = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    config.write_text(main.split("\nhooks:")[0] + "\nvalidation:\n  anchors: warn\n" + f"docs_dir: {docs}\n")
    run = _build(tmp_path / "site", config)
    assert run.returncode != 0
    assert "nowhere.md" in run.stderr + run.stdout and "no-such-section" in run.stderr + run.stdout


def test_the_readme_links_every_page_and_every_link_resolves():
    import tomllib

    import yaml

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    for page in ("README.md", "CONTRIBUTING.md"):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (REPO / page).read_text(encoding="utf-8")):
            assert target.startswith("http") or (REPO / target).exists(), f"{page}: {target}"

    def pages(nav):
        for item in nav:
            for value in item.values() if isinstance(item, dict) else [item]:
                yield from pages(value) if isinstance(value, list) else [value]

    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    for page in pages(nav):
        if page != "contributing.md":  # CONTRIBUTING.md itself is linked
            assert f"docs/{page}" in links, f"the README does not link docs/{page}"
    assert "CONTRIBUTING.md" in links and "LICENSE" in links
    license_ = (REPO / "LICENSE").read_text(encoding="utf-8")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["license"]
    assert license_.startswith(f"{declared['text']} License")
