"""Compiled theme templates kept between processes (render/engine.py `CompiledTemplates`): read
back only for the same source, compiler and versions, only from the user's cache folder."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from newsletter.render import engine
from newsletter.render.engine import CompiledTemplates, theme_environment


def environment_with(cache: CompiledTemplates, templates: Path) -> jinja2.Environment:
    """The theme's environment (project templates first) using `cache`."""
    environment = theme_environment(templates)
    environment.bytecode_cache = cache
    return environment


def project_templates(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir(exist_ok=True)
    (folder / "page.j2").write_text(text, encoding="utf-8")
    return folder


def bucket_code(cache: CompiledTemplates, templates: Path) -> object:
    """What `cache` holds for `page.j2` as it is now, before anything compiles it."""
    environment = environment_with(cache, templates)
    source = (templates / "page.j2").read_text(encoding="utf-8")
    return cache.get_bucket(environment, "page.j2", str(templates / "page.j2"), source).code


def test_a_new_process_reads_the_compiled_theme_back(tmp_path: Path) -> None:
    codes = tmp_path / "codes"
    templates = project_templates(tmp_path, "{% for x in items %}<b>{{ x }}</b>{% endfor %}")
    first = CompiledTemplates(lambda: codes)
    output = environment_with(first, templates).get_template("page.j2").render(items=["<a>", 2])
    assert output == "<b>&lt;a&gt;</b><b>2</b>"
    assert len(list(codes.iterdir())) == 1
    second = CompiledTemplates(lambda: codes)  # nothing in memory: as a new process
    assert bucket_code(second, templates) is not None
    again = environment_with(second, templates).get_template("page.j2").render(items=["<a>", 2])
    assert again == output


def test_an_edited_template_is_compiled_again(tmp_path: Path) -> None:
    codes = tmp_path / "codes"
    templates = project_templates(tmp_path, "one {{ x }}")
    environment_with(CompiledTemplates(lambda: codes), templates).get_template("page.j2")
    project_templates(tmp_path, "two {{ x }}")
    fresh = CompiledTemplates(lambda: codes)
    assert bucket_code(fresh, templates) is None
    rendered = environment_with(fresh, templates).get_template("page.j2").render(x=1)
    assert rendered == "two 1"


def test_another_compiler_does_not_use_the_stored_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    codes = tmp_path / "codes"
    templates = project_templates(tmp_path, "{{ x }}")
    environment_with(CompiledTemplates(lambda: codes), templates).get_template("page.j2")
    assert bucket_code(CompiledTemplates(lambda: codes), templates) is not None
    # Another version of the package, or of the sandbox that rewrites templates while parsing.
    monkeypatch.setattr(engine, "_signature", ["another compiler"])
    assert bucket_code(CompiledTemplates(lambda: codes), templates) is None


def test_a_torn_or_foreign_file_only_costs_a_compile(tmp_path: Path) -> None:
    codes = tmp_path / "codes"
    templates = project_templates(tmp_path, "<i>{{ x }}</i>")
    environment_with(CompiledTemplates(lambda: codes), templates).get_template("page.j2")
    (stored,) = codes.iterdir()
    whole = stored.read_bytes()
    for broken in (whole[: len(whole) // 2], b"not jinja's", b""):
        stored.write_bytes(broken)
        fresh = CompiledTemplates(lambda: codes)
        assert bucket_code(fresh, templates) is None
        assert environment_with(fresh, templates).get_template("page.j2").render(x=3) == "<i>3</i>"


def test_sources_from_strings_stay_in_the_process(tmp_path: Path) -> None:
    codes = tmp_path / "codes"
    cache = CompiledTemplates(lambda: codes)
    environment = theme_environment(None)
    assert cache.from_string(environment, "{{ 1 + 1 }}").render() == "2"
    assert not codes.exists()


def test_an_unwritable_folder_only_costs_compiling(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder", encoding="utf-8")
    templates = project_templates(tmp_path, "{{ x }}!")
    cache = CompiledTemplates(lambda: blocked / "codes")
    assert environment_with(cache, templates).get_template("page.j2").render(x=1) == "1!"


def test_the_folder_is_the_users_cache_not_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert engine.user_code_dir() == tmp_path / "xdg" / "newsletter" / "templates"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert engine.user_code_dir() == tmp_path / "home" / ".cache" / "newsletter" / "templates"


def test_no_home_folder_means_nothing_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HOME", raising=False)

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert engine.user_code_dir() is None
    templates = project_templates(tmp_path, "{{ x }}?")
    cache = CompiledTemplates(engine.user_code_dir)
    assert environment_with(cache, templates).get_template("page.j2").render(x=2) == "2?"
