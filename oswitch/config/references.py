"""``{env:VAR}`` and ``{file:path}`` references in an opencode.json, read as OpenCode
substitutes them.

A reference that can never work (a malformed variable name, a ``{file:...}`` in an
inline config, a file that is not a regular file or not text) raises Invalid; one
whose variable or file is just not there (yet) raises MissingReference, which the
reader may turn into a warning (a key file not there: the target starts disabled).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import attrs

from oswitch.config.files import FileTooBig, NotRegularFile, read_regular_file
from oswitch.config.problems import Invalid
from oswitch.config.structure import ENV_NAME

REFERENCE = re.compile(r"\{(env|file):([^}]*)\}")
"""One reference: group 1 is its kind (``env`` or ``file``), group 2 what it names."""

KEY_FILE_LIMIT = 64 * 1024
"""The largest file a ``{file:path}`` reference reads: a key is one line; a file of
64 KiB is not a key."""


@attrs.frozen(kw_only=True)
class References:
    """Where ``{env:VAR}`` and ``{file:path}`` are read from.

    ``base_dir`` is the config file's directory, which relative paths start from
    (OpenCode's rule); None when the config is not from a file (an inline reload),
    and then ``{file:...}`` is refused rather than read from wherever the process
    happens to run.
    """

    base_dir: Path | None = None
    environ: Mapping[str, str] = attrs.field(factory=lambda: os.environ, repr=False)

    @classmethod
    def of_source(cls, source: str | None) -> References:
        """References of a config read from the file ``source`` (None: not from a file)."""
        return cls(base_dir=Path(source).resolve().parent if source is not None else None)


class MissingReference(Exception):
    """A reference to a variable that is unset or a file that is absent or empty:
    ``what`` is wrong, and what to ``do``."""

    def __init__(self, what: str, do: str) -> None:
        super().__init__(what)
        self.what = what
        self.do = do


def referenced(kind: str, spec: str, refs: References) -> str:
    """The value one reference of ``kind`` ("env" or "file") naming ``spec`` stands
    for. Never blocks on a file (see read_regular_file). Raises Invalid for a
    reference that can never work, MissingReference for one whose variable or file
    is not there (yet)."""
    if kind == "env":
        if not ENV_NAME.fullmatch(spec):
            raise Invalid("{env:...} must name an environment variable, like OPENAI_API_KEY")
        value = refs.environ.get(spec, "")
        if not value:
            raise MissingReference(f"{spec} is not set", f"set {spec}")
        return value
    if refs.base_dir is None:
        raise Invalid("{file:...} is read only from a config file, not from an inline config")
    path = Path(spec.strip()).expanduser()
    path = path if path.is_absolute() else refs.base_dir / path
    try:
        data = read_regular_file(path, limit=KEY_FILE_LIMIT)
    except FileNotFoundError:
        raise MissingReference(f"{path} does not exist", "create it") from None
    except NotRegularFile:
        raise Invalid(f"{{file:...}}: {path}: not a regular file") from None
    except FileTooBig as exc:
        raise Invalid(f"{{file:...}}: {path}: {exc}") from None
    except OSError as exc:
        raise Invalid(f"{{file:...}}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig").strip()  # OpenCode trims a file's text
    except UnicodeDecodeError:
        raise Invalid(f"{{file:...}}: {path}: not UTF-8 text") from None
    if not text:
        raise MissingReference(f"{path} is empty", "write the key into it")
    return text


def substitute(text: str, refs: References) -> str:
    """``text`` with every reference replaced by its value. Raises Invalid or
    MissingReference as :func:`referenced` does."""
    parts: list[str] = []
    end = 0
    for ref in REFERENCE.finditer(text):
        parts += [text[end : ref.start()], referenced(ref[1], ref[2], refs)]
        end = ref.end()
    return "".join([*parts, text[end:]])
