"""The README's code blocks and shell commands, for the tests that run them (test_readme, test_real_format_e2e)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_blocks(language: str) -> list[str]:
    """The ```<language> blocks of the README, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def readme_commands() -> list[tuple[str, str | None]]:
    """``(command, expected error or None)`` for each shell command of the README (continuations joined)."""
    commands: list[tuple[str, str | None]] = []
    for block in readme_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("# error:") and commands:
                commands[-1] = (commands[-1][0], line.removeprefix("# ").split("...")[0].strip())
            elif line and not line.startswith("#"):
                commands.append((re.sub(r"\s+#.*$", "", line), None))
    return commands
