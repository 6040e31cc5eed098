"""The model card of a run (the README.md of its Hub repository): metadata in the Hub's model-card schema,
then what a user needs to reproduce and use it: base and license, data, teacher, training options, the
evaluation tables the run produced, the writer prompt and output format (quoted from contract/prompt.py by
rendering it, never copied), and the `ollama run` / `story-bot` lines.

The card is built and parsed with huggingface_hub's own ModelCard / ModelCardData; the Hub checks its
metadata again when the commit carries it (HfApi.create_commit posts it to /api/validate-yaml first).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from contract import prompt

#: The card's first body line: a README.md holding it was written by this module, and may be replaced.
MARKER = "<!-- model card written by story-pipeline hub -->"
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_QUANT = re.compile(r"(?i)[-._]((?:I?Q\d\w*)|BF16|F16|F32)$")
# Options that name local paths or how the run was started: nothing a reader can reproduce from.
_LOCAL_OPTIONS = ("base", "out_dir", "data", "eval_data", "adapter", "chat_template", "resume", "overwrite")


class CardError(ValueError):
    """A run or an input the card cannot be written from; the message names the fix."""


@dataclass
class CardInputs:
    repo_id: str
    base_model: str | None = None  # the base's Hub id (default: training.json's base, if it is one)
    license: str | None = None  # default: the base's, read from its local README
    books: list[str] = field(default_factory=list)  # titles, or Gutenberg .txt files to read them from
    writing_prompts: str | None = None  # the Hub dataset id of the Writing Prompts stories used
    teacher: str | None = None
    evals: list[Path] = field(default_factory=list)
    ollama_name: str | None = None
    files: list[str] = field(default_factory=list)  # what the repository will hold
    gguf_models: list[str] = field(
        default_factory=list
    )  # its GGUF models (merged or quantized, not adapters)
    # GGUF model name -> its verify-quant sidecar (pipeline/export/distance.py), where it has a current one
    quant_distances: dict[str, dict] = field(default_factory=dict)


def read_run(run_dir: Path) -> dict:
    """training.json of a finished run, or CardError."""
    meta_path = Path(run_dir) / "training.json"
    if not (Path(run_dir) / "adapter_config.json").is_file() or not meta_path.is_file():
        raise CardError(
            f"{run_dir} holds no finished run (adapter_config.json and training.json): give the -o folder "
            "of `story-pipeline train`"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("status") != "done":
        raise CardError(
            f"the run in {run_dir} did not finish (status {meta.get('status')!r}): resume it "
            "(story-pipeline train --resume ...) before publishing it"
        )
    return meta


def base_model_id(meta: dict, given: str | None) -> str:
    base = given or str(meta.get("base", ""))
    if not _REPO_ID.match(base) or (not given and Path(base).exists()):
        raise CardError(
            f"the run's base {base!r} is a local folder, not a Hub id: pass --base-model with the id it was "
            "downloaded from (e.g. deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B)"
        )
    return base


def base_license(meta: dict, given: str | None) -> str:
    """The license given, else the one the base's own model card declares (a local base folder)."""
    if given:
        return given
    from huggingface_hub import ModelCard

    readme = Path(str(meta.get("base", ""))) / "README.md"
    if readme.is_file():
        found = ModelCard.load(readme, ignore_metadata_errors=True).data.license
        if isinstance(found, str) and found:
            return found
    raise CardError(
        "the base model's license is not known here (its folder has no model card declaring one): pass "
        "--license with the base's license id (e.g. mit, apache-2.0)"
    )


def book_title(value: str) -> str:
    """A book's title: the value, or a Gutenberg file's `Title:` line (else its file name)."""
    path = Path(value)
    if not (path.suffix == ".txt" and path.is_file()):
        return value
    with open(path, encoding="utf-8", errors="replace") as f:
        for _, line in zip(range(200), f, strict=False):
            if line.lower().startswith("title:"):
                return line.split(":", 1)[1].strip()
    return path.stem


def render(run_dir: Path, inputs: CardInputs):
    """The card as a huggingface_hub ModelCard (str() gives README.md); CardError for a bad input."""
    from huggingface_hub import ModelCard, ModelCardData

    meta = read_run(run_dir)
    base = base_model_id(meta, inputs.base_model)
    license_ = base_license(meta, inputs.license)
    datasets = [inputs.writing_prompts] if inputs.writing_prompts else []
    tags = [
        "peft",
        "lora",
        "story-writing",
        "creative-writing",
        f"base_model:adapter:{base}",
        "story-assistant",
    ]
    if any(f.endswith(".gguf") for f in inputs.files):  # the adapter's GGUF or a model's
        tags.append("gguf")
    data = ModelCardData(
        base_model=base,
        library_name="peft",
        license=license_,
        datasets=datasets or None,
        tags=tags,
        language=["en"],
        pipeline_tag="text-generation",
    )
    sections = [
        f"{MARKER}\n\n# {inputs.repo_id.split('/')[-1]}\n\n{_summary(meta, base, license_)}",
        _data_section(inputs),
        _training_section(meta),
        _eval_section(inputs.evals),
        _prompt_section(),
        _usage_section(inputs, base),
        _quant_section(inputs.quant_distances),
        _files_section(inputs.files),
    ]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(s for s in sections if s) + "\n")
    _check(card, base)
    return card


def _check(card, base: str) -> None:
    """Parse the card back with huggingface_hub: the metadata must read as the Hub's schema wants."""
    from huggingface_hub import ModelCard

    again = ModelCard(str(card)).data.to_dict()
    if again.get("base_model") != base or again.get("library_name") != "peft":
        raise CardError("the model card's metadata did not survive a round trip through huggingface_hub")


def _summary(meta: dict, base: str, license_: str) -> str:
    method = str(meta.get("method", "sft")).upper()
    return (
        f"A LoRA adapter ({method}{', QLoRA' if meta.get('qlora') else ''}) on "
        f"[{base}](https://huggingface.co/{base}) that reads a story, reasons briefly about its characters "
        "and flow, then continues it; made with story-assistant's `story-pipeline`.\n\n"
        f"License: `{license_}`, the base model's terms (the adapter is a derivative of it)."
    )


def _data_section(inputs: CardInputs) -> str:
    lines = ["## Training data"]
    if inputs.books:
        titles = ", ".join(f"*{book_title(b)}*" for b in inputs.books)
        lines.append(f"- Public-domain books from [Project Gutenberg](https://www.gutenberg.org): {titles}.")
    if inputs.writing_prompts:
        lines.append(
            f"- [Writing Prompts](https://huggingface.co/datasets/{inputs.writing_prompts}) stories "
            f"(`{inputs.writing_prompts}`)."
        )
    if inputs.teacher:
        lines.append(
            f"- The reasoning before each continuation was written by the teacher `{inputs.teacher}`."
        )
    return "\n".join(lines) if len(lines) > 1 else ""


def _training_section(meta: dict) -> str:
    options = {k: v for k, v in (meta.get("options") or {}).items() if k not in _LOCAL_OPTIONS}
    results = {
        k: meta.get(k)
        for k in (
            "precision",
            "device",
            "trainable_parameters",
            "global_step",
            "best_eval_loss",
            "last_eval_loss",
            "finished",
        )
    }
    for split, stats in (meta.get("rows") or {}).items():
        results[f"{split} rows"] = stats.get("rows", stats) if isinstance(stats, dict) else stats
    rows = [f"| `{k}` | {_value(v)} |" for k, v in {**options, **results}.items() if v is not None]
    return (
        "## Training options\n\nFrom the run's `training.json`.\n\n| option | value |\n| --- | --- |\n"
        + "\n".join(rows)
    )


def _value(v) -> str:
    text = ", ".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
    return text.replace("|", "\\|")


def _eval_section(paths: list[Path]) -> str:
    parts = ["## Evaluation"]
    for path in paths:
        found = _eval_tables(Path(path))
        if not found:
            raise CardError(
                f"{path} holds no evaluation table: give the -o folder of `story-pipeline eval compare` "
                "(table.md), `eval metrics` (summary.json) or `eval perplexity` (perplexity.json), or a file"
            )
        parts += [f"### {title}\n\n{table.strip()}" for title, table in found]
    return "\n\n".join(parts) if len(parts) > 1 else ""


def _eval_tables(path: Path) -> list[tuple[str, str]]:
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    found = []
    for f in files:
        if f.name == "table.md" or (path.is_file() and f.suffix == ".md"):
            found.append((f"Readability, diversity and tone ({path.name})", f.read_text(encoding="utf-8")))
        elif f.name == "perplexity.json":
            found.append((f"Held-out perplexity ({path.name})", _perplexity_table(json.loads(f.read_text()))))
        elif f.name == "summary.json" and not (f.parent / "table.md").exists():
            found.append((f"Text metrics ({path.name})", _metrics_table(json.loads(f.read_text()))))
    return found


def _perplexity_table(result: dict) -> str:
    rows = [
        "| model | answer loss | answer perplexity | answer tokens | assistant perplexity |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in ("base", "adapter"):
        if name in result:
            a, t = result[name]["answer"], result[name]["assistant"]
            cells = (f"{a['loss']:.4f}", f"{a['perplexity']:.3f}", str(a["tokens"]), f"{t['perplexity']:.3f}")
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + f"\n\n{result.get('rows', '?')} held-out rows."


def _metrics_table(summary: dict) -> str:
    from pipeline.evaluate import report

    column = report.Column(Path(str(summary.get("source", "texts"))).name, summary.get("metrics") or {})
    return report.markdown_table([column], int(summary.get("entropy_window", 100)))


def _prompt_section() -> str:
    story, direction = "{the story so far}", "{where the story should go}"
    return (
        "## Prompt format: keep it\n\n"
        "The model was trained on this user turn (in the base's own chat template), byte for byte; it is "
        "what the Modelfile's TEMPLATE and `story-bot` send. Keep it, including the `\u2019` apostrophe and "
        "the newline after the story:\n\n"
        f"```text\n{prompt.render_prompt(story)}```\n\n"
        "A direction and a length, when given, come after the story:\n\n"
        f"```text\n{prompt.render_prompt(story, direction, prompt.Length.MEDIUM)}```\n\n"
        "It answers with its reasoning, then the continuation:\n\n"
        f"```text\n{prompt.render_target('{reasoning}', '{continuation}')}\n```\n\n"
        f"Stop generating at `{prompt.ANSWER_CLOSE}`."
    )


def _usage_section(inputs: CardInputs, base: str) -> str:
    lines = ["## Use it", "", "```bash"]
    if inputs.ollama_name:
        lines.append(f"ollama run {inputs.ollama_name}")
    for f in inputs.gguf_models:  # Ollama pulls a repository's GGUF by its quantization tag
        quant = _QUANT.search(Path(f).stem)
        tag = f":{quant.group(1).upper()}" if quant and len(inputs.gguf_models) > 1 else ""
        lines.append(f"ollama run hf.co/{inputs.repo_id}{tag}  # {f}")
    name = inputs.ollama_name or "writer"
    lines += [
        f"STORY_BOT_MODEL={name} story-bot run           # the Discord bot (docs: Setting up and commands)",
        f"story-bot console --model {name}               # the same bot in a terminal",
        "```",
        "",
        "In Python, with the base model:",
        "",
        "```python",
        "from peft import AutoPeftModelForCausalLM",
        f'model = AutoPeftModelForCausalLM.from_pretrained("{inputs.repo_id}")  # loads {base} under it',
        "```",
    ]
    return "\n".join(lines)


def _quant_section(measured: dict[str, dict]) -> str:
    """verify-quant's figures for each quantized GGUF whose sidecar travels with it (upload.extra_files)."""
    from pipeline.export.distance import SIDECAR_SUFFIX

    rows = []
    for name, doc in sorted(measured.items()):
        rows += _quant_rows(name, doc)
    if not rows:
        return ""
    columns = [
        "file",
        "with adapter",
        "type",
        "mean KL(F16 \\|\\| quant)",
        "top-1 agreement",
        "answer perplexity F16 -> quant",
        "verdict",
    ]
    head = "| " + " | ".join(columns) + " |\n" + "| --- " * len(columns) + "|"
    return (
        "## Quantization\n\nEach quantized file measured against the F16 file it was quantized from, in "
        "llama.cpp, on the answer tokens of held-out rows (`story-pipeline verify-quant`; the figures are "
        f"in its `{SIDECAR_SUFFIX}` file).\n\n" + head + "\n" + "\n".join(rows)
    )


def _quant_rows(gguf_name: str, doc: dict) -> list[str]:
    out = []
    for m in doc.get("measurements", {}).values():
        d = m["distance"]
        verdict = f"{'within' if m['passed'] else 'OUTSIDE'} the {m['judged_as']} tolerance"
        cells = [
            f"`{gguf_name}`",
            m["lora"] or "-",
            m["judged_as"],
            f"{d['mean_kl']:.4g}",
            f"{d['top1']:.1%}",
            f"{d['ppl_f16']:.3f} -> {d['ppl_quant']:.3f}",
            verdict,
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _files_section(files: list[str]) -> str:
    if not files:
        return ""
    return "## Files\n\n" + "\n".join(f"- `{f}`" for f in sorted(files))
