"""Held-out loss and perplexity on the continuation, for a base model and the same model with an adapter.

Rows are in the training format (`{"messages": [user, assistant]}`, contract.prompt.training_row), and
are rendered with the tokenizer's own chat template, exactly as training renders them. The loss counts
only the tokens of the answer, the story continuation between the answer tags: the reasoning is the
model's own planning and has no single right wording, so it is conditioned on but not scored. (A token
that straddles the opening tag and the first word counts as an answer token.) The whole assistant turn
(reasoning, tags and answer) is reported beside it as `assistant`. No sampling, so two models on the same
rows compare without noise. Perplexity = exp(mean negative log-likelihood per scored token).
An adapter trained with `--target answer` is scored on the rows as it was trained on them, reasoning
removed (`contract.target`), and the base beside it on the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from contract import prompt
from contract import target as targets
from contract.target import Target


class PerplexityError(ValueError):
    pass


@dataclass
class Encoded:
    ids: list[int]
    answer: list[bool]  # per token: inside the answer
    assistant: list[bool]  # per token: inside the assistant turn's text


def _spans(row: dict, n: int) -> tuple[list[dict], str, str]:
    messages = row.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        raise PerplexityError(
            f"row {n} has no `messages` list of a user and an assistant turn (training format)"
        )
    last = messages[-1]
    if (
        not isinstance(last, dict)
        or last.get("role") != "assistant"
        or not isinstance(last.get("content"), str)
    ):
        raise PerplexityError(f"row {n}: the last message must be the assistant's continuation")
    content = last["content"]
    parsed = prompt.parse_output(content)
    if not parsed.answer:
        raise PerplexityError(f"row {n}: the assistant turn has no answer between {prompt.ANSWER_OPEN} tags")
    return messages, content, parsed.answer


def encode(tokenizer, row: dict, n: int = 1) -> Encoded:
    """Token ids of the rendered conversation and which tokens belong to the answer."""
    from contract import chat_template

    messages, content, answer = _spans(row, n)
    chat = chat_template.of_tokenizer(tokenizer)
    if chat is None:
        raise PerplexityError("the tokenizer has no chat template to render the rows with")
    # as training renders a row (pipeline.train.rows.encode_turns): the served prompt, then the reply
    text = chat.render(messages[:-1], add_generation_prompt=True) + content + chat.reply_end
    c_start = text.rfind(content)
    if c_start < 0:
        raise PerplexityError(
            f"row {n}: the chat template changed the assistant text; cannot find the answer"
        )
    a_start = c_start + content.index(answer, content.lower().find(prompt.ANSWER_OPEN) + 1)
    spans = [(c_start, c_start + len(content)), (a_start, a_start + len(answer))]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    masks = [[s < end and e > start for s, e in enc["offset_mapping"]] for start, end in spans]
    return Encoded(list(enc["input_ids"]), answer=masks[1], assistant=masks[0])


@dataclass
class Totals:
    nll: float = 0.0
    tokens: int = 0

    def add(self, nll: float, tokens: int) -> None:
        self.nll += nll
        self.tokens += tokens

    def result(self) -> dict:
        loss = self.nll / self.tokens if self.tokens else None
        return {
            "loss": loss,
            "perplexity": math.exp(loss) if loss is not None else None,
            "tokens": self.tokens,
        }


def evaluate(
    model, rows: list[Encoded], batch_size: int = 4, progress: Callable[[int], None] | None = None
) -> dict:
    """Token-weighted loss on the answer and on the assistant turn, over all rows."""
    import torch

    device = next(model.parameters()).device
    totals = {"answer": Totals(), "assistant": Totals()}
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].ids))  # similar lengths share a batch
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            batch = [rows[i] for i in order[b : b + batch_size]]
            width = max(len(r.ids) for r in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            attn = torch.zeros(len(batch), width, dtype=torch.long)
            masks = {k: torch.zeros(len(batch), width, dtype=torch.bool) for k in totals}
            for j, r in enumerate(batch):  # right padding: positions of real tokens do not move
                ids[j, : len(r.ids)] = torch.tensor(r.ids)
                attn[j, : len(r.ids)] = 1
                masks["answer"][j, : len(r.ids)] = torch.tensor(r.answer)
                masks["assistant"][j, : len(r.ids)] = torch.tensor(r.assistant)
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits.float()
            # token t is predicted from the logits at t - 1
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), ids[:, 1:].to(device), reduction="none"
            )
            for k, total in totals.items():
                m = masks[k][:, 1:].to(device)
                total.add(float(nll[m].double().sum()), int(m.sum()))
            if progress:
                progress(len(batch))
    return {k: t.result() for k, t in totals.items()}


def load(base: str, adapter: str | Path | None):
    """(model, tokenizer): the base, with the PEFT adapter attached if given; local folders only."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not Path(base).is_dir():
        what = "is a file" if Path(base).exists() else "does not exist"
        raise PerplexityError(f"--base {base} {what}: give a local model folder (with config.json)")
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise PerplexityError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
    tok_source = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else base
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_source, local_files_only=True)
        model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(
            base, local_files_only=True, dtype="auto"
        )
    except OSError as e:
        raise PerplexityError(f"cannot load {base} from local files ({e}): give a local model folder") from e
    if not getattr(tokenizer, "chat_template", None):
        raise PerplexityError(f"the tokenizer of {tok_source} has no chat template: rows cannot be rendered")
    if not tokenizer.is_fast:
        raise PerplexityError(f"the tokenizer of {tok_source} is not a fast tokenizer (needed for offsets)")
    if adapter is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(adapter))
        except RuntimeError as e:  # a state-dict size mismatch: dozens of lines, one per tensor
            if "size mismatch" not in str(e):
                raise
            trained_on = _trained_on(Path(adapter))
            raise PerplexityError(
                f"{adapter} was trained on a model of another size than {base}: give the base it was "
                f"trained on{f' ({trained_on})' if trained_on else ''} as --base"
            ) from e
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model, tokenizer


def _trained_on(adapter: Path) -> str | None:
    import json

    try:
        return json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get(
            "base_model_name_or_path"
        )
    except (OSError, ValueError, AttributeError):
        return None


def target_of(adapter: str | Path | None) -> Target:
    """The target the adapter was trained with (its training.json, carried in its chat template
    record); a `text` adapter is refused: it was never trained on the writer prompt these rows hold."""
    from contract import chat_template

    trained = chat_template.of_folder(Path(adapter)) if adapter is not None else None
    target = targets.of(trained.target) if trained is not None else targets.DEFAULT
    if not target.chat:
        raise PerplexityError(
            f"{adapter} was trained with --target text (plain book text): it never saw the writer prompt "
            "these rows are scored in; score an SFT adapter trained on top of it"
        )
    return target


def shaped(row: dict, n: int, target: Target) -> dict:
    """The row as the adapter was trained on it: with an `answer` target, its reasoning removed, so the
    answer is scored given the prompt alone, as that model writes it."""
    messages = row.get("messages")
    if target is targets.DEFAULT or not isinstance(messages, list) or not messages:
        return row
    last = messages[-1]
    if not isinstance(last, dict) or not isinstance(last.get("content"), str):
        return row  # encode says what is wrong with it
    try:
        reply = target.reply(last["content"])
    except targets.TargetError as e:
        raise PerplexityError(f"row {n}: {e}") from e
    return {**row, "messages": [*messages[:-1], {**last, "content": reply}]}


def run(
    base: str,
    adapter: str | Path | None,
    rows: list[dict],
    batch_size: int = 4,
    max_tokens: int = 4096,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Loss and perplexity of the base, and of base + adapter when one is given, on the same rows."""
    model, tokenizer = load(base, adapter)
    target = target_of(adapter)
    encoded = [encode(tokenizer, shaped(r, n, target), n) for n, r in enumerate(rows, 1)]
    kept = [e for e in encoded if len(e.ids) <= max_tokens]
    if not kept:
        raise PerplexityError(f"every row is longer than --max-tokens {max_tokens}: raise it")
    out: dict = {"rows": len(kept), "skipped_too_long": len(encoded) - len(kept), "max_tokens": max_tokens}
    out["target"] = target.value
    if adapter is None:
        out["base"] = evaluate(model, kept, batch_size, progress)
        return out
    with model.disable_adapter():
        out["base"] = evaluate(model, kept, batch_size, progress)
    out["adapter"] = evaluate(model, kept, batch_size, progress)
    return out
