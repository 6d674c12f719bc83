"""The one provider registry (newsletter/providers.py) against the provider modules and the
config: every entry imports, every provider module is registered, the config accepts every
registered kind, and a setting is refused with the same words at load time and when a transport
is built in code. Adding a provider as docs/adding-a-provider.md says is checked here end to end.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

import newsletter.delivery.transports as transports_package
from newsletter.config import TRANSPORT_KINDS, Settings, TransportSettings, load_settings
from newsletter.delivery.transports import describe_transport, make_transport, provider_class
from newsletter.delivery.transports._http import HttpProviderTransport
from newsletter.errors import ConfigError
from newsletter.providers import PROVIDER_SETTINGS, PROVIDERS, Provider, setting_problems

KINDS = sorted(PROVIDERS)


def provider_modules() -> dict[str, list[type[HttpProviderTransport]]]:
    """Each module of delivery/transports/ → the provider transport classes it defines."""
    found: dict[str, list[type[HttpProviderTransport]]] = {}
    for info in pkgutil.iter_modules(transports_package.__path__):
        module = importlib.import_module(f"{transports_package.__name__}.{info.name}")
        classes = [
            value
            for value in vars(module).values()
            if inspect.isclass(value)
            and issubclass(value, HttpProviderTransport)
            and value is not HttpProviderTransport
            and value.__module__ == module.__name__
        ]
        if classes:
            found[info.name] = classes
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_every_registered_provider_imports_as_its_kind(kind: str) -> None:
    provider = PROVIDERS[kind]
    assert provider.kind == kind
    cls = provider_class(kind)
    assert issubclass(cls, HttpProviderTransport)
    assert cls.__name__ == provider.class_name
    assert cls.__module__ == provider.import_path
    assert cls.name == kind  # the name in messages and the ledger is the kind
    assert provider.uses <= set(PROVIDER_SETTINGS)


def test_every_provider_module_is_registered() -> None:
    modules = provider_modules()
    assert modules, "no provider module found: the scan is broken"
    for module, classes in modules.items():
        for cls in classes:
            assert cls.name in PROVIDERS, f"{module}.{cls.__name__} is not in providers.py"
            assert (PROVIDERS[cls.name].module, PROVIDERS[cls.name].class_name) == (
                module,
                cls.__name__,
            )
    assert sorted(cls.name for classes in modules.values() for cls in classes) == KINDS


def test_the_config_accepts_exactly_the_registered_kinds() -> None:
    accepted = set(TRANSPORT_KINDS)
    assert accepted == {"outbox", "smtp", *PROVIDERS}


def environment(tmp_path: Path) -> dict[str, str]:
    """Every secret any provider reads (fake values), and a HOME without AWS files."""
    keys = {provider_class(kind).default_key_env: "key" for kind in KINDS}
    return keys | {
        "MAILJET_SECRET_KEY": "secret",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_REGION": "eu-west-1",
        "HOME": str(tmp_path),
    }


MINIMAL = """\
[newsletter]
name = "Test News"
from = "Test News <news@example.org>"

[footer]
address = "1 Main Street"

[transport]
"""


def project_with(tmp_path: Path, transport: str) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "newsletter.toml").write_text(MINIMAL + transport + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("kind", KINDS)
def test_a_registered_kind_loads_and_builds_its_transport(tmp_path: Path, kind: str) -> None:
    loaded = load_settings(project_with(tmp_path, f'kind = "{kind}"'))
    assert loaded.transport.kind == kind and loaded.warnings == ()
    transport = make_transport(loaded, environment(tmp_path))
    assert isinstance(transport, provider_class(kind))
    assert describe_transport(loaded).startswith(kind)


@dataclass(frozen=True)
class Refused:
    """`[transport]` values the registry refuses for one provider."""

    region: str | None = None
    domain: str | None = None
    sandbox: bool = False
    api_key_env: str | None = None

    def toml(self) -> str:
        lines = [f'{key} = "{value}"' for key, value in
                 (("region", self.region), ("domain", self.domain),
                  ("api_key_env", self.api_key_env)) if value is not None]  # fmt: skip
        return "\n".join([*lines, "sandbox = true"] if self.sandbox else lines)


def refused(provider: Provider) -> Refused:
    return Refused(
        region="Nowhere 1" if provider.regions or provider.aws_region else None,
        domain="mg.example.org/x" if provider.checks_domain else None,
        sandbox=provider.sandbox_refused is not None,
        api_key_env="MY_KEY" if provider.api_key_env_refused else None,
    )


@pytest.mark.parametrize("kind", [kind for kind in KINDS if refused(PROVIDERS[kind]) != Refused()])
def test_a_setting_is_refused_alike_at_load_and_when_built_in_code(
    tmp_path: Path, kind: str
) -> None:
    values = refused(PROVIDERS[kind])
    expected = setting_problems(
        PROVIDERS[kind],
        region=values.region,
        domain=values.domain,
        sandbox=values.sandbox,
        api_key_env=values.api_key_env,
    )
    assert expected, f"{kind}: the registry refuses nothing"
    with pytest.raises(ConfigError) as at_load:
        load_settings(project_with(tmp_path, f'kind = "{kind}"\n{values.toml()}'))
    built = TransportSettings(
        kind=kind,
        region=values.region,
        domain=values.domain,
        sandbox=values.sandbox,
        api_key_env=values.api_key_env,
    )
    with pytest.raises(ConfigError) as in_code:
        provider_class(kind).from_settings(built, environment(tmp_path))
    for problem in expected:
        line = f"transport.{problem.key}: {problem.message}"
        assert line in str(at_load.value)
        assert line in str(in_code.value)
    assert ":10: transport." in str(at_load.value)  # the line of the first refused key


def test_a_kind_outside_the_registry_is_refused(settings: Settings) -> None:
    with pytest.raises(KeyError):
        provider_class("acme")
    bad = replace(settings, transport=replace(settings.transport, kind="acme"))
    with pytest.raises(ConfigError, match="unknown transport 'acme'"):
        make_transport(bad, {})


def test_an_error_found_when_the_transport_is_built_names_its_line(tmp_path: Path) -> None:
    root = project_with(tmp_path, 'kind = "sendgrid"\napi_key_env = "NEWS_SENDGRID_KEY"')
    with pytest.raises(ConfigError) as caught:
        make_transport(load_settings(root), {})
    assert (
        f"{root / 'newsletter.toml'}:10: transport.api_key_env: the sendgrid transport needs its "
        "API key in the environment variable NEWS_SENDGRID_KEY"
    ) in str(caught.value)
