"""Regenerate the README's generated sections (``make readme``).

The support table comes from ``shimnn.support.support_table()``; tests fail when the README's
copy differs.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shimnn.support import support_table  # noqa: E402


def replace_section(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- {name}:start/end --> markers")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def main() -> None:
    readme = ROOT / "README.md"
    text = replace_section(readme.read_text(), "support-table", support_table())
    readme.write_text(text)


if __name__ == "__main__":
    main()
