"""Jinja2 environments and per-recipient slot markers.

Templates and items are rendered once per issue. Where they use a per-recipient value, the
rendered text holds a marker (`NLSLOT<n>X`: letters and digits only, so Markdown, MJML and the CSS
inliner pass it through untouched). `split_slots` turns marked text into a `SlotText`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
from jinja2 import filters as jinja_filters
from markupsafe import Markup

from .. import __version__
from ..errors import Problem
from ..slots import UNSUBSCRIBE_URL, Slot, SlotText
from .sandbox import Sandbox
from .theme import package_theme_dir

_MARKER = re.compile(r"NLSLOT(\d+)X")


class SlotRegistry:
    """The slots of one render, each with a marker that stands in for it in rendered text."""

    def __init__(self) -> None:
        self._slots: list[Slot] = []
        self._index: dict[Slot, int] = {}

    def marker(self, slot: Slot) -> str:
        index = self._index.get(slot)
        if index is None:
            index = len(self._slots)
            self._slots.append(slot)
            self._index[slot] = index
        return f"NLSLOT{index}X"

    def split(self, text: str, *, html: bool = False) -> SlotText:
        """Cut rendered text at its markers into static strings and `Slot`s.

        In `html`, a slot at the start of a link or image address (before any scheme) becomes a
        `url` slot: its per-recipient value is scheme-checked when filled (slots.safe_url).
        """
        parts: list[str | Slot] = []
        position = 0
        for match in _MARKER.finditer(text):
            index = int(match.group(1))
            if index >= len(self._slots):
                continue
            if match.start() > position:
                parts.append(text[position : match.start()])
            slot = self._slots[index]
            # Only subscriber values: the unsubscribe and web URLs are ours.
            if html and slot.field is not None and starts_url(text, match.start()):
                slot = Slot(slot.path, slot.default, url=True)
            parts.append(slot)
            position = match.end()
        if position < len(text):
            parts.append(text[position:])
        return SlotText(tuple(parts))

    def fill(self, text: str, value: Callable[[Slot], str]) -> str:
        return self.split(text).fill(value)


# Attributes whose value is fetched or followed as a URL.
_URL_ATTRIBUTES = frozenset(
    {"href", "src", "action", "formaction", "background", "poster", "cite", "xlink:href",
     "srcset", "data", "longdesc", "usemap", "lowsrc", "dynsrc", "ping"}
)  # fmt: skip
_ATTRIBUTE_START = re.compile(r"""([A-Za-z_:][-A-Za-z0-9_:.]*)\s*=\s*(["']?)([^"'<>]*)\Z""")


def starts_url(html: str, position: int) -> bool:
    """Whether `position` of `html` is inside a URL attribute's value, before any scheme ends."""
    tag_start = html.rfind("<", 0, position)
    if tag_start < 0 or html.rfind(">", tag_start, position) >= 0:
        return False
    found = _ATTRIBUTE_START.search(html, tag_start, position)
    if found is None or found.group(1).lower() not in _URL_ATTRIBUTES:
        return False
    before = found.group(3)
    # `https://x/?q=` before the value fixes the scheme; `java` or nothing does not.
    return not any(char in before for char in ":/?#")


class SlotValue:
    """What a template gets for a per-recipient value: renders as its marker."""

    def __init__(self, registry: SlotRegistry, path: str, default: str | None = None) -> None:
        self._registry = registry
        self.path = path
        self.default = default

    def __str__(self) -> str:
        return self._registry.marker(Slot(self.path, self.default))

    def __html__(self) -> str:
        return str(self)

    def with_default(self, default: str) -> SlotValue:
        return SlotValue(self._registry, self.path, default)


class SubscriberProxy:
    """`subscriber` in templates: every field is a per-recipient slot."""

    def __init__(self, registry: SlotRegistry) -> None:
        self._registry = registry

    def __getattr__(self, name: str) -> SlotValue:
        if name.startswith("_"):
            raise AttributeError(name)
        return SlotValue(self._registry, f"subscriber.{name}")

    def __getitem__(self, name: str) -> SlotValue:
        return self.__getattr__(name)


def _default_filter(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Jinja's `default`, which also gives a per-recipient value its fallback."""
    if isinstance(value, SlotValue):
        return value.with_default(str(default_value))
    return jinja_filters.do_default(value, default_value, boolean)


def slot_context(registry: SlotRegistry) -> dict[str, Any]:
    return {
        "subscriber": SubscriberProxy(registry),
        UNSUBSCRIBE_URL: SlotValue(registry, UNSUBSCRIBE_URL),
    }


def code_flavour(environment: jinja2.Environment) -> str:
    """Everything of `environment` that Jinja's compiler reads: templates compiled under the same
    flavour compile to the same code (the sandbox rewrites loops and `~` while parsing)."""
    autoescape = environment.autoescape
    finalize = environment.finalize
    return repr(
        (
            jinja2.__version__,
            f"{type(environment).__module__}.{type(environment).__qualname__}",
            autoescape if isinstance(autoescape, bool) else getattr(autoescape, "__qualname__", ""),
            None if finalize is None else getattr(finalize, "__qualname__", repr(finalize)),
            environment.optimized,
            environment.is_async,
            environment.keep_trailing_newline,
            environment.trim_blocks,
            environment.lstrip_blocks,
            environment.newline_sequence,
            environment.block_start_string,
            environment.block_end_string,
            environment.variable_start_string,
            environment.variable_end_string,
            environment.comment_start_string,
            environment.comment_end_string,
            environment.line_statement_prefix,
            environment.line_comment_prefix,
            sorted(environment.extensions),
            sorted(environment.filters),
            sorted(environment.tests),
            sorted(getattr(environment, "intercepted_binops", ())),
            sorted(getattr(environment, "intercepted_unops", ())),
        )
    )


_signature: list[str] = []


def _compiler_signature() -> str:
    """This package's version and the source of the modules that shape compiled templates."""
    if not _signature:
        digest = hashlib.sha256(__version__.encode())
        here = Path(__file__).resolve().parent
        for name in ("engine.py", "sandbox.py"):
            digest.update((here / name).read_bytes())
        _signature.append(digest.hexdigest())
    return _signature[0]


def user_code_dir() -> Path | None:
    """Where compiled theme templates are kept between processes: the user's own cache
    (`$XDG_CACHE_HOME/newsletter/templates`, by default `~/.cache/...`), never the project.
    None when the user has no home folder (a service account): then nothing is kept."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except (RuntimeError, KeyError):
            return None
    return Path(base) / "newsletter" / "templates"


class CompiledTemplates(jinja2.BytecodeCache):
    """Compiled template code, by environment flavour, template and source.

    Every render makes fresh environments (their sandbox state is per render), so without this
    each render compiled the theme again: a third of a preview rebuild. Code is kept in this
    process; the theme's template files' code is also kept in `user_code_dir()`, so that a new
    process (`newsletter build` after an edit) does not compile the theme again (0.1 s).

    Compiled code is code: it is read only from the user's own cache folder, as Python's own
    bytecode is, never from the project folder, which people who may only edit templates (run
    in the sandbox) can write to. Jinja's bucket rejects a file of another Jinja or Python
    version, or compiled from another source.
    """

    LIMIT = 256
    FILES = 64

    def __init__(self, folder: Callable[[], Path | None] | None = None) -> None:
        self._codes: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._folder = folder
        self._files: set[str] = set()  # keys of template files (not `from_string` sources)

    def get_bucket(
        self, environment: jinja2.Environment, name: str, filename: str | None, source: str
    ) -> jinja2.bccache.Bucket:
        flavoured = f"{code_flavour(environment)}\0{name}\0{filename}"
        if filename is not None and self._folder is not None:
            # Kept between processes: the code that shapes compiled code (the sandbox's parse
            # rewrites) may differ in another process.
            flavoured += f"\0{_compiler_signature()}"
        key = hashlib.sha256(flavoured.encode()).hexdigest()
        bucket = jinja2.bccache.Bucket(environment, key, self.get_source_checksum(source))
        self.load_bytecode(bucket)
        if filename is not None and self._folder is not None:
            with self._lock:
                self._files.add(key)
            if bucket.code is None:
                self._read_file(bucket)
        return bucket

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with self._lock:
            bucket.code = self._codes.get((bucket.key, bucket.checksum))

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with self._lock:
            self._codes[(bucket.key, bucket.checksum)] = bucket.code
            while len(self._codes) > self.LIMIT:
                self._codes.popitem(last=False)
            to_file = bucket.key in self._files
        if to_file:
            self._write_file(bucket)

    def _read_file(self, bucket: jinja2.bccache.Bucket) -> None:
        """The bucket's code from its file, if that holds this source's code; else nothing."""
        folder = self._folder() if self._folder is not None else None
        if folder is None:
            return
        try:
            with open(folder / bucket.key, "rb") as stored:
                bucket.load_bytecode(stored)
        except Exception:  # a missing, torn or foreign file only means compiling again
            bucket.reset()
            return
        if bucket.code is not None:
            with self._lock:
                self._codes[(bucket.key, bucket.checksum)] = bucket.code

    def _write_file(self, bucket: jinja2.bccache.Bucket) -> None:
        """Written whole (a temporary file, then a rename); a failure only costs a compile."""
        folder = self._folder() if self._folder is not None else None
        if folder is None:
            return
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            try:
                with os.fdopen(handle, "wb") as out:
                    bucket.write_bytecode(out)
                os.replace(temporary, folder / bucket.key)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            kept = [path for path in folder.iterdir() if not path.name.startswith(".")]
            if len(kept) > self.FILES:
                kept.sort(key=lambda path: path.stat().st_mtime_ns, reverse=True)
                for path in kept[self.FILES :]:
                    path.unlink(missing_ok=True)
        except (OSError, TypeError, ValueError):
            pass

    def clear(self) -> None:
        with self._lock:
            self._codes.clear()

    def from_string(self, environment: jinja2.Environment, source: str) -> jinja2.Template:
        """`environment.from_string(source)`, compiled once per process for each source."""
        bucket = self.get_bucket(environment, "<string>", None, source)
        code = bucket.code
        if code is None:
            code = environment.compile(source)
            bucket.code = code
            self.dump_bytecode(bucket)
        return environment.template_class.from_code(
            environment, code, environment.make_globals(None), None
        )


compiled_templates = CompiledTemplates(user_code_dir)


def theme_environment(project_templates: Path | None) -> jinja2.Environment:
    """The theme's environment: project overrides first, then the default theme; autoescaped,
    sandboxed (sandbox.py)."""
    loaders: list[jinja2.BaseLoader] = []
    if project_templates is not None and project_templates.is_dir():
        loaders.append(jinja2.FileSystemLoader(project_templates))
    loaders.append(jinja2.FileSystemLoader(package_theme_dir()))
    environment = Sandbox(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=True,
        bytecode_cache=compiled_templates,
    )
    environment.filters["default"] = _default_filter
    environment.filters["d"] = _default_filter
    environment.guard_filters()
    return environment


class _NoFiles(jinja2.BaseLoader):
    """Content is one file: `include`, `import` and `extends` are refused, whatever the path."""

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        raise jinja2.TemplateNotFound(
            template,
            f"items, the subject and the introduction cannot include, import or extend "
            f"other templates ('{template}')",
        )


def text_environment() -> jinja2.Environment:
    """For Markdown sources and subjects: per-recipient values, no HTML escaping at this stage;
    sandboxed (sandbox.py), with no access to any other file."""
    environment = Sandbox(
        loader=_NoFiles(),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    environment.filters["default"] = _default_filter
    environment.filters["d"] = _default_filter
    environment.guard_filters()
    return environment


def find_template_file(environment: jinja2.Environment, name: str) -> Path | None:
    """The file a theme name resolves to (project override first); also for images."""
    loader = environment.loader
    loaders = loader.loaders if isinstance(loader, jinja2.ChoiceLoader) else [loader]
    for each in loaders:
        if isinstance(each, jinja2.FileSystemLoader):
            for folder in each.searchpath:
                candidate = Path(folder) / name
                if candidate.is_file():
                    return candidate
    return None


def template_problem(
    err: Exception, *, file: Path | None, template_name: str | None, line_offset: int = 0
) -> Problem:
    """A Jinja error as a problem naming the file and line, and what went wrong."""
    line: int | None = None
    if isinstance(err, jinja2.TemplateSyntaxError):
        line = err.lineno
        message = f"template syntax error: {err.message}"
    elif isinstance(err, RecursionError):
        line = _line_from_traceback(err.__traceback__, template_name)
        message = "template error: a macro calls itself without end (or nests too deeply)"
    elif isinstance(err, jinja2.UndefinedError):
        line = _line_from_traceback(err.__traceback__, template_name)
        message = f"unknown template variable: {err.message}"
    else:
        line = _line_from_traceback(err.__traceback__, template_name)
        message = f"template error: {err}"
    if line is not None:
        line += line_offset
    return Problem(message, file=file, line=line)


def _line_from_traceback(trace: TracebackType | None, template_name: str | None) -> int | None:
    found: int | None = None
    while trace is not None:
        code = trace.tb_frame.f_code
        if (
            template_name and code.co_filename.endswith(template_name)
        ) or code.co_filename == "<template>":
            found = trace.tb_lineno
        trace = trace.tb_next
    return found


def safe(html: str) -> Markup:
    return Markup(html)
