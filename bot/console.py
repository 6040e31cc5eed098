"""`story-bot console`: the story core in a terminal, as one local channel.

Lines you type are passages; commands start with '/'. The model's passage streams in as it is written.
It is the same service the Discord bot drives, on the same database, so it is also the quickest way to
try a real Ollama model: `story-bot console --model writer`.
"""

from __future__ import annotations

import asyncio
import getpass
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TextIO

from plumbing.atomic import OutputError, OutputExistsError, write_text

from .core.files import check_size
from .core.lore import LoreChange
from .core.service import Delta, Done, Failed, Queued, Started, StoryError, StoryService
from .core.settings import describe as describe_settings
from .core.story import Channel, Member, Passage

HELP = """\
Type a line to add it to the story. Commands:
  /continue [direction] [--length short|medium|long|WORDS]   the model writes the next passage
  /regenerate            another take on the model's newest passage (the old one is kept)
  /rate +1|-1            rate the model's newest passage
  /reasoning             what the model thought before writing it
  /undo   /reset   /show   /new [title]   /export [--json] [--force] [file]   /help   /quit
  /import story.json     a story file (`/export --json`) as this channel's new story (the old one kept)
Shaping the story:
  /edit N text           replace passage N's text (every version is kept)
  /takes   /take K       the model's newest passage's takes, and show take K instead
  /erase N   /redo       take passage N and all after it out; bring the newest erased run back
  /fork N [title]        a new story from passages 1..N (this one is kept: /stories, /open ID)
  /stories   /open ID    the stories kept here, and make one the story again
Long stories:
  /story memory [text | --clear]      the premise, tone and rules pinned at the start of the context
  /story note [text | --clear]        the author's note: a standing direction (a /continue direction
                                      replaces it for that passage)
  /lore add Name | key, words | text [--always]     an entry brought in when a keyword is mentioned
  /lore edit Name | [key, words] | [text] [--always | --not-always]   empty parts stay as they are
  /lore remove Name   /lore list
  /lore import file.json              SillyTavern World Info, a NovelAI lorebook or ours: a report per entry
  /lore export [--sillytavern] [--force] [file.json]   ours, or SillyTavern's World Info
  /story show --summary               the rolling summary standing in for the oldest passages
  /story summary edit text | restore | pause | resume   correct it, bring back its previous version,
                                      stop or restart new summaries
  /story context                      exactly what the model will receive next
The story's world:
  /story settings [model=M] [temperature=T] [top_p=P] [repeat_penalty=R] [length=L] [--reset]
  /persona set Name | description     the character you write (the cast is pinned in the context)
  /persona clear   /persona list
"""

CHANNEL = Channel("console")
_LENGTH = re.compile(r"(?:^|\s)(?:--length|-l)(?:\s+|=)(\S+)")


class Console:
    def __init__(self, service: StoryService, out: TextIO = sys.stdout, member: Member | None = None):
        self.service = service
        self.out = out
        user = member or Member(f"console:{_user()}", _user())
        self.member = user

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def run(self, lines: AsyncIterator[str]) -> None:
        for lost in self.service.recover():
            if lost.channel_id == CHANNEL.id:
                self.say("(the last session stopped while the model was writing; that passage was not added)")
        story = self.service.show(CHANNEL)
        self.say(f"Story: {story.title or 'untitled'} · {len(story.passages)} passages · /help for commands")
        async for line in lines:
            if not await self.handle(line.rstrip("\n")):
                break

    async def handle(self, line: str) -> bool:
        """Act on one line; False when the session should end."""
        if not line.strip():
            return True
        if not line.startswith("/"):
            return self._do(lambda: self._wrote(self.service.write(CHANNEL, self.member, line)))
        name, _, arg = line[1:].partition(" ")
        name, arg = name.lower(), arg.strip()
        if name == "story":  # `/story export` works as in Discord
            name, _, arg = arg.partition(" ")
        if name in ("quit", "exit", "q"):
            return False
        if name in ("continue", "c"):
            length = _LENGTH.search(arg)
            direction = _LENGTH.sub(" ", arg).strip() or None
            events = self.service.continue_story(CHANNEL, self.member, direction, length and length.group(1))
            await self._stream(events)
        elif name in ("regenerate", "r"):
            await self._stream(self.service.regenerate(CHANNEL, self.member))
        elif name == "context":
            try:
                await self._context(arg)
            except StoryError as exc:
                self.say(f"! {exc}")
        elif name in self.QUICK:
            self._do(lambda: getattr(self, self.QUICK[name])(arg))
        else:
            self.say(f"unknown command /{name}: /help lists them")
        return True

    QUICK = {
        "rate": "_rate",
        "reasoning": "_reasoning",
        "undo": "_undo",
        "reset": "_reset",
        "new": "_new",
        "show": "_show",
        "export": "_export",
        "help": "_help",
        "memory": "_memory",
        "note": "_note",
        "lore": "_lore",
        "edit": "_edit",
        "takes": "_takes",
        "take": "_take",
        "erase": "_erase",
        "redo": "_redo",
        "fork": "_fork",
        "stories": "_stories",
        "list": "_stories",
        "open": "_open",
        "settings": "_settings",
        "summary": "_summary_command",
        "persona": "_persona",
        "import": "_import",
    }

    # --- commands ------------------------------------------------------------------------------
    def _do(self, action) -> bool:
        try:
            action()
        except StoryError as exc:
            self.say(f"! {exc}")
        except OSError as exc:  # an export to a path that cannot be written, or that exists
            from plumbing.boundary import explain_os

            self.say(f"! {exc if isinstance(exc, OutputError) else explain_os(exc)}")
        return True

    def _wrote(self, passage) -> None:
        self.say(f"(passage {passage.position} added)")

    async def _stream(self, events) -> None:
        printed = ""
        async for event in events:
            match event:
                case Queued(position, waiting_for):
                    self.say(f"(queued: {position} ahead, waiting for the {waiting_for})")
                case Started(_, model):
                    self.say(f"({model} is writing…)")
                case Delta(answer):
                    if answer.startswith(printed):
                        self.out.write(answer[len(printed) :])
                    else:  # the parser revised what it had: start the line again
                        self.out.write("\n" + answer)
                    self.out.flush()
                    printed = answer
                case Done(passage):
                    if passage.text != printed:
                        self.out.write(
                            passage.text[len(printed) :]
                            if passage.text.startswith(printed)
                            else "\n" + passage.text
                        )
                    take = (
                        f" · take {passage.take}/{passage.alternatives}" if passage.alternatives > 1 else ""
                    )
                    self.say(f"\n(passage {passage.position} by the model{take} · /rate +1|-1 · /reasoning)")
                case Failed(message):
                    self.say(("\n" if printed else "") + f"! {message}")

    def _newest_model_generation(self) -> int:
        for p in reversed(self.service.show(CHANNEL).passages):
            if p.by_model and p.generation_id:
                return p.generation_id
        raise StoryError("the model has not written a passage in this story yet: /continue first")

    def _rate(self, arg: str) -> None:
        value = {"+1": 1, "1": 1, "up": 1, "+": 1, "-1": -1, "down": -1, "-": -1}.get(arg)
        if value is None:
            raise StoryError("rate with /rate +1 or /rate -1")
        tally = self.service.rate(self._newest_model_generation(), self.member, value)
        self.say(f"(rated {'👍' if value > 0 else '👎'} · {tally.up} 👍 {tally.down} 👎)")

    def _reasoning(self, _: str) -> None:
        self.say(self.service.reasoning(self._newest_model_generation()))

    def _undo(self, _: str) -> None:  # the console's one writer may undo anything
        self.say(f"(undone: {_preview(self.service.undo(CHANNEL, self.member, may_manage=True).text)})")

    def _reset(self, _: str) -> None:
        self.say(f"(reset: {self.service.reset(CHANNEL, self.member, may_manage=True)} passages taken out)")

    def _new(self, title: str) -> None:
        self.say(f"(new story: {self.service.start(CHANNEL, self.member, title).title or 'untitled'})")

    def _help(self, _: str) -> None:
        self.say(HELP)

    def _show(self, arg: str = "") -> None:
        if arg.strip() == "--summary":
            return self._summary()
        story = self.service.show(CHANNEL)
        if not story.passages:
            self.say("(the story is empty: type its opening line)")
        for p in story.passages:
            self.say(f"[{_label(p)}] {p.text}")

    # --- shaping the story: edit, takes, erase and redo, fork, the library ---------------------------
    def _edit(self, arg: str) -> None:
        position, _, text = arg.partition(" ")
        p = self.service.edit(CHANNEL, self.member, _number(position, "/edit N text"), text, may_manage=True)
        self.say(f"(passage {p.position} edited: {_preview(p.text)})")

    def _takes(self, _: str) -> None:
        passage, texts = self.service.takes(CHANNEL)
        for k, text in enumerate(texts, 1):
            mark = "▶" if k == passage.take else " "
            self.say(f"{mark} take {k}/{len(texts)}: {_preview(text, 200)}")

    def _take(self, arg: str) -> None:
        p = self.service.choose_take(CHANNEL, self.member, _number(arg, "/take K"))
        self.say(f"(passage {p.position} shows take {p.take}/{p.alternatives}: {_preview(p.text)})")

    def _erase(self, arg: str) -> None:
        gone = self.service.erase(CHANNEL, self.member, _number(arg, "/erase N"), may_manage=True)
        self.say(f"(erased passages {gone[0].position}–{gone[-1].position}: /redo brings them back)")

    def _redo(self, _: str) -> None:
        back = self.service.redo(CHANNEL, self.member)
        self.say(f"(brought back {len(back)} passages, {back[0].position}–{back[-1].position})")

    def _fork(self, arg: str) -> None:
        position, _, title = arg.partition(" ")
        fork = self.service.fork(CHANNEL, self.member, _number(position, "/fork N [title]"), title, CHANNEL)
        self.say(
            f"(forked: story {fork.id} “{fork.title}” with {len(fork.passages)} passages is the story now; "
            "the console has no threads, so the original is kept: /stories lists it, /open ID returns)"
        )

    def _stories(self, _: str) -> None:
        for s in self.service.library(CHANNEL):
            state = "open" if s.active else "archived"
            fork = f", fork of {s.forked_from}" if s.forked_from else ""
            self.say(
                f"{s.id}: {s.title or 'untitled'} · {s.passages} passages · {_ago(s.last_activity)} · "
                f"{state}{fork}"
            )

    def _open(self, arg: str) -> None:
        story = self.service.open(CHANNEL, _number(arg, "/open ID"))
        self.say(
            f"(story {story.id} “{story.title or 'untitled'}” is the story again: "
            f"{len(story.passages)} passages)"
        )

    def _summary(self) -> None:
        state = self.service.summary_state(CHANNEL)
        if state.current is None:
            self.say(
                "(no summary: the whole story still fits the model's window)"
                if not state.last_error
                else "(no summary yet)"
            )
        else:
            self.say(f"(summary of the first {state.covers} passages)\n{state.current.text}")
        if state.writing:
            self.say("(a new summary is being written)")
        if state.paused:
            self.say("(summaries are paused: /story summary resume)")
        if state.last_error:
            self.say(f"(the last attempt failed: {state.last_error})")

    def _settings(self, arg: str) -> None:
        """`/story settings` alone shows them; `name=value` pairs change them (the console's one writer
        may)."""
        reset = "--reset" in arg.split()
        pairs = dict(re.findall(r"(\w+)=(\S+)", arg))
        if reset or pairs:
            numbers = {"temperature", "top_p", "repeat_penalty"}
            try:
                changes = {k: float(v) if k in numbers else v for k, v in pairs.items()}
            except ValueError as exc:
                raise StoryError(f"give numbers for {', '.join(sorted(numbers & set(pairs)))}") from exc
            unknown = sorted(set(changes) - {"model", "length", *numbers})
            if unknown:
                raise StoryError(
                    f"unknown settings {unknown}: the settings are model, temperature, top_p, repeat_penalty "
                    "and length (/story settings temperature=0.8)"
                )
            self.service.set_settings(CHANNEL, self.member, True, reset=reset, **changes)
        current, model = self.service.settings(CHANNEL)
        self.say(f"(settings: {describe_settings(current, model)})")
        self.say(f"(models allowed here: {', '.join(self.service.allowed_models(CHANNEL))})")

    def _summary_command(self, arg: str) -> None:
        verb, _, text = arg.partition(" ")
        match verb.lower():
            case "edit":
                writing = self.service.summary_state(CHANNEL).writing
                self.service.edit_summary(CHANNEL, self.member, text)
                self.say(
                    "(summary rewritten"
                    + ("; the one being written now will be dropped)" if writing else ")")
                )
            case "restore":
                back = self.service.restore_summary(CHANNEL, self.member)
                self.say(f"(previous summary restored: {_preview(back.text or '', 200)})")
            case "pause" | "resume":
                self.service.pause_summaries(CHANNEL, self.member, verb.lower() == "pause")
                self.say(f"(summaries {verb.lower()}d)")
            case "" | "show":
                self._summary()
            case _:
                raise StoryError(f"unknown /story summary {verb}: use edit, restore, pause or resume")

    def _persona(self, arg: str) -> None:
        verb, _, rest = arg.partition(" ")
        match verb.lower():
            case "set":
                name, _, description = rest.partition("|")
                p = self.service.set_persona(CHANNEL, self.member, name.strip(), description.strip())
                self.say(f"(you play {p.name}: {p.description})")
            case "clear":
                if not self.service.clear_persona(CHANNEL, self.member):
                    raise StoryError("you have no persona in this story: /persona set Name | description")
                self.say("(you left the cast)")
            case "list" | "":
                cast = self.service.cast(CHANNEL)
                if not cast:
                    self.say("(no cast yet: /persona set Name | description)")
                for p in cast:
                    self.say(f"{p.name} ({p.member_name}): {p.description}")
            case _:
                raise StoryError(f"unknown /persona {verb}: use set, clear or list")

    def _memory(self, arg: str) -> None:
        self._pinned(arg, "memory", "memory", self.service.memory, self.service.set_memory)

    def _note(self, arg: str) -> None:
        self._pinned(arg, "author's note", "note", self.service.note, self.service.set_note)

    def _pinned(self, arg: str, label: str, command: str, get, put) -> None:
        if not arg:
            note = get(CHANNEL)
            self.say(note.text if note and note.text else f"(no {label}: `/story {command} text` sets it)")
            return
        note = put(CHANNEL, self.member, "" if arg == "--clear" else arg)
        self.say(f"({label} cleared)" if not note.text else f"({label} set: {len(note.text)} characters)")

    def _lore(self, arg: str) -> None:
        verb, _, rest = arg.partition(" ")
        flags = set(re.findall(r"--(always|not-always)\b", rest))
        rest = re.sub(r"\s*--(always|not-always)\b", "", rest).strip()
        name, keys, text = [*(part.strip() for part in rest.split("|", 2)), "", ""][:3]
        match verb.lower():
            case "add":
                change = LoreChange(name, keys, text, "always" in flags)
                entry = self.service.lore_add(CHANNEL, self.member, change)
                self.say(f"(lore entry {entry.name!r} added: {', '.join(entry.keywords) or 'always on'})")
            case "edit":
                always = True if "always" in flags else False if "not-always" in flags else None
                change = LoreChange(keywords=keys or None, text=text or None, always_on=always)
                entry = self.service.lore_edit(CHANNEL, self.member, name, change)
                self.say(f"(lore entry {entry.name!r} updated, version {entry.version})")
            case "import":
                self._report(
                    self.service.import_lore(
                        CHANNEL, self.member, _read(arg[len(verb) :], "/lore import file.json")
                    )
                )
            case "export":
                flags, name = _flags(arg[len(verb) :])
                text = self.service.export_lore(CHANNEL, "sillytavern" if "sillytavern" in flags else "ours")
                self._write(text, name, "force" in flags, "/lore export")
            case "remove" | "rm":  # the console's one writer may remove any entry
                entry = self.service.lore_remove(CHANNEL, self.member, name, may_manage=True)
                self.say(f"(lore entry {entry.name!r} removed)")
            case "list" | "":
                entries = self.service.lore(CHANNEL)
                if not entries:
                    self.say("(the lorebook is empty: /lore add Name | key, words | text)")
                for e in entries:
                    keys = "always on" if e.always_on else ", ".join(e.keywords)
                    extra = f"; also {', '.join(e.keywords)}" if e.always_on and e.keywords else ""
                    self.say(f"{e.name} [{keys}{extra}] v{e.version}: {e.text}")
            case _:
                raise StoryError(f"unknown /lore {verb}: use add, edit, remove, list, import or export")

    async def _context(self, arg: str) -> None:
        length = _LENGTH.search(arg)
        direction = _LENGTH.sub(" ", arg).strip() or None
        preview = await self.service.context_preview(
            CHANNEL, self.member, direction=direction, length=length and length.group(1)
        )
        r = preview.record
        lore = ", ".join(e["name"] for e in r["lore"]) or "none"
        unit = "tokens" if r["unit"] == "tokens" else "tokens (estimated)"
        older = f", {r['dropped']} older left out" if r["dropped"] else ""
        self.say(
            f"(for {preview.model}: window {preview.window} tokens, {preview.num_predict} for the answer; "
            f"context {r['size']} of {r['budget']} {unit}; parts: {', '.join(r['parts'])}; lore: {lore}; "
            f"{len(r['passage_ids'])} passages{older}; guidance: {r['guidance'] or 'none'}; "
            f"cast: {', '.join(p['name'] for p in r['cast']) or 'none'})"
        )
        self.say(f"(settings: {preview.settings_line})")
        self.say(preview.user_text)

    def _export(self, arg: str) -> None:  # no file: print it
        flags, name = _flags(arg)
        text = self.service.export_json(CHANNEL) if "json" in flags else self.service.export(CHANNEL)
        self._write(text, name, "force" in flags, "/export")

    def _write(self, text: str, name: str, force: bool, command: str) -> None:
        """Print `text`, or write it to the file `name` (atomically; an existing file only with --force)."""
        if not name:
            self.say(text.rstrip("\n"))
            return
        path = Path(name).expanduser()
        if path.exists() and not path.is_dir() and not force:
            raise OutputExistsError(f"{path} already exists: {command} --force {name} replaces it")
        write_text(path, text)
        self.say(f"(exported to {path})")

    def _import(self, arg: str) -> None:
        story, report, notes = self.service.import_story(
            CHANNEL, self.member, _read(arg, "/import story.json")
        )
        self.say(
            f"(imported story {story.id} “{story.title or 'untitled'}”: {len(story.passages)} passages; "
            "the story here before is kept: /stories)"
        )
        for note in notes:
            self.say(f"(note: {note})")
        self._report(report)

    def _report(self, report) -> None:
        self.say(f"({report.summary()})")
        for outcome in report.outcomes:
            self.say(f"  {outcome.line()}")


async def stdin_lines(prompt: str = "> ") -> AsyncIterator[str]:
    """Lines from the terminal without blocking the event loop (a streaming passage keeps printing)."""
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            sys.stdout.write(prompt)
            sys.stdout.flush()
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        yield line


def _flags(arg: str) -> tuple[set[str], str]:
    """`--json --force out.json` -> ({"json", "force"}, "out.json")."""
    words = arg.split()
    return {w[2:] for w in words if w.startswith("--")}, " ".join(w for w in words if not w.startswith("--"))


def _read(arg: str, usage: str) -> bytes:
    """A file the member names, read only once its size is known to be within the import limit."""
    name = arg.strip()
    if not name:
        raise StoryError(f"name the file: {usage}")
    path = Path(name).expanduser()
    try:
        check_size(path.stat().st_size)
        return path.read_bytes()
    except OSError as exc:
        raise StoryError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _number(arg: str, usage: str) -> int:
    if not arg.strip().isdigit():
        raise StoryError(f"give a number: {usage}")
    return int(arg)


def _label(p: Passage) -> str:
    """A passage's line head: position, who, its take and whether it was edited."""
    parts = [str(p.position), "model" if p.by_model else p.author_name]
    if p.alternatives > 1:
        parts.append(f"take {p.take}/{p.alternatives}")
    if p.edited:
        parts.append("edited")
    return " · ".join(parts)


def _ago(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(when))


def _preview(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "writer"
