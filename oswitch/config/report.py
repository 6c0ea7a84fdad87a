"""What a parse finds besides problems: warnings, and where oswitch's own section is.

A leaf beside ``problems``: the opencode.json reader, the setting advice and the
entry points fill it; ``check-config`` and ``serve`` print it.
"""

from __future__ import annotations

import attrs

from oswitch.config.problems import ConfigPath, PathSeg, render_path


@attrs.define
class ConfigReport:
    """Pass one to ``parse_config`` / ``load_config`` to learn what they warn about.

    ``warnings`` are ``(path, reason)`` pairs, the path rendered as in ConfigError
    (``$.provider.amazon-bedrock.npm``), in document order; a warning never holds a
    secret. ``section`` is where oswitch's own keys live: ``()`` in an oswitch file,
    ``("switcher",)`` in an opencode.json.
    """

    warnings: list[tuple[str, str]] = attrs.field(factory=list)
    section: ConfigPath = ()

    def warn(self, path: ConfigPath, reason: str) -> None:
        self.warnings.append((render_path(path), reason))

    def path_of(self, *keys: PathSeg) -> str:
        """The rendered path of ``keys`` inside oswitch's section, e.g.
        ``$.switcher.control.token``. Raises nothing."""
        return render_path(self.section + keys)
