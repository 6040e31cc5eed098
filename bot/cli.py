"""`story-bot`: run the Discord bot, the terminal console, or sync slash commands.

Settings come from STORY_BOT_* variables and an optional story-bot.toml (see bot/config.py); flags
given here win over both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from plumbing.boundary import DEBUG_HELP, boundary_group

if TYPE_CHECKING:  # the commands import the bot's modules as they run, so `--help` starts fast
    from bot.config import Settings
    from bot.core.service import StoryService
    from bot.llm import HostStatus


def _error_line(message: str) -> None:
    typer.echo(f"story-bot: {message}", err=True)


app = typer.Typer(
    name="story-bot",
    help="Collaborative story continuation on Discord and in a terminal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=boundary_group("story-bot", _error_line),
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP)) -> None:
    """Collaborative story continuation on Discord and in a terminal."""


Config = Annotated[
    Path | None, typer.Option("--config", help="A TOML settings file (default: ./story-bot.toml if present)")
]


def _settings(config: Path | None, **overrides):
    from bot.config import ConfigError, load_settings

    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        _fail(str(exc))


def _fail(message: str, code: int = 1) -> NoReturn:
    _error_line(message)
    raise typer.Exit(code)


@app.command()
def run(
    shards: Annotated[
        str | None, typer.Option(help="This process's shards, e.g. 0-3 (of --shard-count) [STORY_BOT_SHARDS]")
    ] = None,
    shard_count: Annotated[
        int | None,
        typer.Option(help="Shards of the whole bot, the same for every process [STORY_BOT_SHARD_COUNT]"),
    ] = None,
    config: Config = None,
) -> None:
    """Run the Discord bot (needs STORY_BOT_DISCORD_TOKEN and a reachable Ollama with the model)."""
    settings = _settings(config, shards=shards, shard_count=shard_count)
    token = _token(settings)
    asyncio.run(_run(settings, token))


async def _run(settings, token: str) -> None:
    from bot.app import CannotStart, build_service, removed_unless_used

    with removed_unless_used(settings.db) as used:
        try:
            async with build_service(settings) as service:
                await _serve(service, settings, token, used)
        except CannotStart as exc:
            _fail(str(exc))


async def _serve(
    service: StoryService, settings: Settings, token: str, logged_in: Callable[[], None]
) -> None:
    import aiohttp
    import discord

    from bot.discord.client import InUse, StoryBot

    pace = settings.pace()
    bot = StoryBot(
        service,
        edit_interval=pace.edit_interval,
        commands_per_minute=pace.commands_per_minute,
        shard_ids=settings.shard_ids(),
        shard_count=settings.shard_count,
        settings_role=settings.settings_role,
    )
    try:
        async with bot:  # discord.py's start, in its two halves: nothing reaches the store before login
            await bot.login(token)
            logged_in()
            await bot.connect()
    except discord.LoginFailure:
        _fail(BAD_TOKEN)
    except InUse as exc:
        _fail(str(exc))
    except (aiohttp.ClientError, OSError) as exc:
        _fail(_unreachable(exc, "start"))


def _unreachable(exc: BaseException, verb: str) -> str:
    what = f"{type(exc).__name__}: {exc}"
    return f"cannot reach Discord ({what}): check the network connection, then {verb} again"


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
    import aiohttp
    import discord

    from bot.discord.client import sync_commands

    try:
        return await sync_commands(token, guild)
    except discord.LoginFailure:
        _fail(BAD_TOKEN)
    except discord.HTTPException as exc:
        _fail(f"Discord refused the command sync ({exc.status}): {exc.text}")
    except (aiohttp.ClientError, OSError) as exc:
        _fail(_unreachable(exc, "sync"))


@app.command()
def console(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Ollama model [STORY_BOT_MODEL]")] = None,
    host: Annotated[str | None, typer.Option(help="Ollama server [STORY_BOT_OLLAMA_HOST]")] = None,
    db: Annotated[Path | None, typer.Option(help="The story database [STORY_BOT_DB]")] = None,
    gguf: Annotated[
        Path | None, typer.Option(help="Run this GGUF in-process with llama.cpp, no server [STORY_BOT_GGUF]")
    ] = None,
    lora: Annotated[Path | None, typer.Option(help="With --gguf: a GGUF LoRA adapter [STORY_BOT_LORA]")] = (
        None
    ),
    config: Config = None,
) -> None:
    """Grow a story in the terminal: type passages, /continue, /rate, /export (the same core as Discord)."""
    engine = "llama.cpp" if gguf else None
    settings = _settings(config, model=model, ollama_host=host, db=db, engine=engine, gguf=gguf, lora=lora)
    asyncio.run(_console(settings))


async def _console(settings) -> None:
    from bot.app import CannotStart, build_service
    from bot.console import Console, stdin_lines

    try:
        async with build_service(settings) as service:
            await Console(service).run(stdin_lines())
    except CannotStart as exc:
        _fail(str(exc))


@app.command()
def status(config: Config = None) -> None:
    """Each Ollama host of the settings (or the OpenAI-compatible engine): reachable or not, its models,
    those loaded now, and its load (generations running there and written there in the last 10 minutes,
    by every bot on STORY_BOT_DB)."""
    settings = _settings(config)
    rows = asyncio.run(_status(settings))
    load, note = _host_load(settings.db, time.time() - 600)
    for row in rows:
        running, recent = load.get(row["host"], (0, 0))
        busy = f"running {running}, {recent} in the last 10 min" if note is None else note
        if not row["up"]:
            typer.echo(f"{row['host']}  DOWN  {row['error']}  ({busy})")
            continue
        names = set(row["models"]) | {m.removesuffix(":latest") for m in row["models"]}
        has = "has" if settings.model in names else "lacks"
        loaded = ", ".join(row["loaded"]) or "none"
        typer.echo(f"{row['host']}  up  {has} {settings.model}  loaded: {loaded}  load: {busy}")
        typer.echo(f"    models: {', '.join(row['models']) or 'none'}")
    if not any(r["up"] for r in rows):
        raise typer.Exit(1)


async def _status(settings) -> list[HostStatus]:
    from bot.pool import OllamaPool

    if settings.engine == "openai":
        backend = settings.backend()
        try:
            return [await backend.status()]
        finally:
            await backend.close()

    pool = OllamaPool(settings.hosts(), settings.timeouts())
    try:
        return await pool.status()
    finally:
        await pool.close()


def _host_load(db: str, since: float) -> tuple[dict, str | None]:
    """The hosts' load from the store, read-only (it is never migrated or written here); or why not."""
    import sqlite3

    from bot.store.repository import host_load
    from contract.store import migrations
    from contract.store.engine import PgConnection, is_url

    try:
        if is_url(db):
            conn: PgConnection | sqlite3.Connection = PgConnection(db)
            conn.execute("BEGIN READ ONLY")
        elif Path(db).is_file():
            conn = sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True)
        else:
            return {}, f"no store at {db}"
        try:
            if migrations.schema_version(conn) < migrations.SCHEMA_VERSION:
                return {}, "not recorded: the store is older than this bot (start the bot once on it)"
            return host_load(conn, since), None
        finally:
            conn.close()
    except Exception as exc:  # a status line, not a failure: the hosts are still listed
        return {}, f"store unreadable: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}"


@app.command()
def prompt(context: Annotated[str, typer.Argument(help="The story so far")]) -> None:
    """Print the writer prompt the model receives for a context (the shared contract)."""
    from contract.prompt import PromptError, render_prompt

    try:
        typer.echo(render_prompt(context), nl=False)
    except PromptError as exc:
        _fail(str(exc), 2)


def main() -> None:
    app()
