"""Render params.yaml (with comments) and the README's parameter table from the typed config."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from kws_core.config import Params


def _fmt(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def iter_fields(model: type[BaseModel] = Params, prefix: str = ""):
    """Yield (dotted key, default, description) for every leaf key."""
    defaults = model()
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from iter_fields(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", getattr(defaults, name), field.description or ""


def render_params_yaml() -> str:
    lines = [
        "# kws parameters: every knob of every stage. Override any key on the command line with",
        "# the tutorial's flag names, e.g. `kws run-all --wanted_words=yes,no`.",
        "# Regenerate the defaults with `python -m kws_core.params_doc yaml`.",
    ]
    current: list[str] = []
    for key, default, desc in iter_fields():
        parts = key.split(".")
        section = parts[:-1]
        common = 0
        while common < min(len(section), len(current)) and section[common] == current[common]:
            common += 1
        for depth in range(common, len(section)):
            if depth == 0:
                lines.append("")
            lines.append("  " * depth + f"{section[depth]}:")
        current = section
        indent = "  " * len(section)
        lines.append(f"{indent}{parts[-1]}: {_fmt(default)}  # {desc}")
    return "\n".join(lines) + "\n"


def render_params_table() -> str:
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key, default, desc in iter_fields():
        shown = _fmt(default).replace("|", "\\|")
        rows.append(f"| `{key}` | `{shown}` | {desc.replace('|', '/')} |")
    return "\n".join(rows) + "\n"


START, END = "<!-- params-table:start -->", "<!-- params-table:end -->"


def replace_between(text: str, start: str, end: str, body: str) -> str:
    """`text` with what lies between the `start` and `end` marker lines replaced by `body`."""
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}{end}{tail}"


def update_readme(text: str) -> str:
    """Replace the README's parameter table (between the markers) with the current one."""
    return replace_between(text, START, END, render_params_table())


if __name__ == "__main__":
    import sys
    from pathlib import Path

    what = sys.argv[1] if len(sys.argv) > 1 else "yaml"
    if what == "readme":
        readme = Path(sys.argv[2] if len(sys.argv) > 2 else "README.md")
        readme.write_text(update_readme(readme.read_text()))
    else:
        sys.stdout.write(render_params_yaml() if what == "yaml" else render_params_table())
