"""Turn `pip install`'s output into a few progress lines for `make demo` (stdin to stdout).

pip lists every package it looks at; a newcomer waiting for the demo needs to know only that
it moves and what it is doing: a line every 25 packages found, then the install itself.
Its errors are shown as they come, and its last lines if it ends without installing.
"""

from __future__ import annotations

import sys
import time

EVERY = 25


def main() -> int:
    found, started, tail = 0, time.monotonic(), []
    for line in sys.stdin:
        tail = [*tail[-30:], line]
        if line.startswith("ERROR"):
            sys.stdout.write(line)
        elif line.startswith("Collecting "):
            found += 1
            if found % EVERY == 0:
                say(f"  found {found} packages so far…", started)
        elif line.startswith("Installing collected packages:"):
            count = len(line.split(":", 1)[1].split(","))
            say(f"  installing {count} packages (the longest part)…", started)
        elif line.startswith("Successfully installed"):
            say(f"  installed {len(line.split()) - 2} packages", started)
            return 0
    if not any("already satisfied" in line for line in tail):
        sys.stdout.write("".join(tail))  # pip ended without saying it installed: show why
    else:
        say("  everything was installed already", started)
    return 0


def say(text: str, started: float) -> None:
    print(f"{text} ({time.monotonic() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
