"""Where the tests find the data sets a user has: `$EMBER_DATA` (the folder, or its `<name>`
subfolder), ember's download cache `~/.cache/ember/<name>`, and the system data sets
`/usr/share/datasets/<name>` (Debian's dataset-fashion-mnist, which README's first command
installs). A test that finds none skips and says where it looked."""
import os
from pathlib import Path


def candidates(name: str) -> list:
    """The places a data set called `name` (a folder or a file) is looked for, in order."""
    out = []
    env = os.environ.get("EMBER_DATA")
    if env:
        out += [Path(env).expanduser() / name]
    return out + [Path.home() / ".cache" / "ember" / name, Path("/usr/share/datasets") / name]


def find(name: str, must_hold: str | None = None) -> Path | None:
    """The first place holding `name` (and `must_hold` inside it, for a folder), or None."""
    for p in candidates(name):
        if p.exists() and (must_hold is None or (p / must_hold).exists()):
            return p
    return None


def missing(name: str) -> str:
    """The skip reason: what was not found, where, and how to provide it."""
    return (f"{name} not found in {', '.join(map(str, candidates(name)))}; set EMBER_DATA to a folder holding "
            f"{name}")
