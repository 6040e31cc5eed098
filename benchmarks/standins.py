"""The stand-ins the bot benchmarks run against: stand-in Ollama hosts (tests/fakes/ollama.py), each in a
process of its own (its streaming shares no core or loop with the bot, and killing it is a machine going
away), and discord.py pointed at the stand-in Discord (tests/fakes/discord/)."""

from __future__ import annotations

import multiprocessing as mp


def _serve(conn, text: str, tokens_per_second: float) -> None:
    from contract import go_chat
    from contract.chat_template import ChatTemplate
    from pipeline.tiny import TEMPLATES
    from tests.fakes.ollama import FakeOllama

    server = FakeOllama()
    server.start()
    server.add_model("writer", template=go_chat.writer_template(ChatTemplate(*TEMPLATES["chatml"][:3])))
    server.script("writer", text=text, tokens_per_second=tokens_per_second)
    conn.send(server.url)
    conn.recv()  # until the benchmark is done
    server.stop()


class OllamaHost:
    """A stand-in Ollama host serving the model `writer` (our qwen2.5 TEMPLATE), which streams `text`
    at `tokens_per_second`; started on creation, its address in `url`."""

    def __init__(self, text: str, tokens_per_second: float) -> None:
        ctx = mp.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, text, tokens_per_second), daemon=True)
        self.process.start()
        self.url: str = self._pipe.recv()

    def kill(self) -> None:
        """SIGKILL: its connections reset, mid-stream."""
        self.process.kill()

    def stop(self) -> None:
        if self.process.is_alive():
            self._pipe.send("stop")
            self.process.join(10)


def use_discord(api: str, gateway: str) -> None:
    """discord.py's REST and gateway calls go to the stand-in Discord at these addresses."""
    import discord
    import yarl

    discord.http.Route.BASE = api
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)
