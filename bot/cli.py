"""`story-bot`: run the Discord bot, the terminal console, or sync slash commands.

Settings come from STORY_BOT_* variables and an optional story-bot.toml (see bot/config.py); flags
given here win over both.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="story-bot",
    help="Collaborative story continuation on Discord and in a terminal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

Config = Annotated[
    Path | None, typer.Option("--config", help="A TOML settings file (default: ./story-bot.toml if present)")
]


def _settings(config: Path | None, **overrides):
    from bot.config import ConfigError, load_settings

    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        _fail(str(exc))


def _fail(message: str, code: int = 1):
    typer.echo(f"story-bot: {message}", err=True)
    raise typer.Exit(code)


async def _check_ollama(settings) -> None:
    from bot.llm import LLMError, OllamaBackend

    backend = OllamaBackend(settings.ollama_host, settings.timeouts(), settings.keep_alive)
    try:
        await backend.check(settings.model)
    except LLMError as exc:
        _fail(str(exc))
    finally:
        await backend.close()


@app.command()
def run(config: Config = None) -> None:
    """Run the Discord bot (needs STORY_BOT_DISCORD_TOKEN and a reachable Ollama with the model)."""
    settings = _settings(config)
    token = _token(settings)
    asyncio.run(_run(settings, token))


async def _run(settings, token: str) -> None:
    import discord

    from bot.core.service import StoryService
    from bot.discord.client import StoryBot
    from bot.llm import OllamaBackend
    from bot.store import SchemaError, Store

    await _check_ollama(settings)
    try:
        store = Store(settings.db)
    except SchemaError as exc:
        _fail(str(exc))
    backend = OllamaBackend(settings.ollama_host, settings.timeouts(), settings.keep_alive)
    service = StoryService(store, backend, settings.model_for, settings.counter(), settings.limits())
    bot = StoryBot(
        service, edit_interval=settings.edit_interval, commands_per_minute=settings.member_commands_per_minute
    )
    try:
        async with bot:
            await bot.start(token)
    except discord.LoginFailure:
        _fail(BAD_TOKEN)
    finally:
        await backend.close()
        store.close()


BAD_TOKEN = (
    "Discord refused the bot token: copy it again from the Bot page of your application at "
    "https://discord.com/developers (Reset Token) into STORY_BOT_DISCORD_TOKEN"
)


def _token(settings) -> str:
    from bot.config import ConfigError

    try:
        return settings.token()
    except ConfigError as exc:
        _fail(str(exc))


@app.command()
def sync(
    guild: Annotated[str | None, typer.Option(help="Sync to one guild (instant; for development)")] = None,
    config: Config = None,
) -> None:
    """Register the slash commands with Discord (globally, or in one guild). Never done on start."""
    token = _token(_settings(config))
    if guild is not None and not guild.isdigit():
        _fail(f"--guild takes a server id (digits, from Copy Server ID), not {guild!r}")
    names = asyncio.run(_sync(token, int(guild) if guild else None))
    where = (
        f"in guild {guild} (usable now)"
        if guild
        else "globally (Discord may take up to an hour to show them)"
    )
    typer.echo(f"synced {len(names)} commands {where}: " + ", ".join(f"/{n}" for n in names))


async def _sync(token: str, guild: int | None) -> list[str]:
    import discord

    from bot.discord.client import sync_commands

    try:
        return await sync_commands(token, guild)
    except discord.LoginFailure:
        _fail(BAD_TOKEN)
    except discord.HTTPException as exc:
        _fail(f"Discord refused the command sync ({exc.status}): {exc.text}")


@app.command()
def console(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Ollama model [STORY_BOT_MODEL]")] = None,
    host: Annotated[str | None, typer.Option(help="Ollama server [STORY_BOT_OLLAMA_HOST]")] = None,
    db: Annotated[Path | None, typer.Option(help="The story database [STORY_BOT_DB]")] = None,
    config: Config = None,
) -> None:
    """Grow a story in the terminal: type passages, /continue, /rate, /export (the same core as Discord)."""
    settings = _settings(config, model=model, ollama_host=host, db=db)
    asyncio.run(_console(settings))


async def _console(settings) -> None:
    from bot.console import Console, stdin_lines
    from bot.core.service import StoryService
    from bot.llm import OllamaBackend
    from bot.store import SchemaError, Store

    await _check_ollama(settings)
    try:
        store = Store(settings.db)
    except SchemaError as exc:
        _fail(str(exc))
    backend = OllamaBackend(settings.ollama_host, settings.timeouts(), settings.keep_alive)
    try:
        service = StoryService(store, backend, settings.model_for, settings.counter(), settings.limits())
        try:
            await Console(service).run(stdin_lines())
        finally:
            await service.aclose()  # a summary still being written is tried again next time
    finally:
        await backend.close()
        store.close()


@app.command()
def prompt(context: Annotated[str, typer.Argument(help="The story so far")]) -> None:
    """Print the writer prompt the model receives for a context (the shared contract)."""
    from pipeline.prompt import render_prompt

    typer.echo(render_prompt(context), nl=False)


def main() -> None:
    app()
