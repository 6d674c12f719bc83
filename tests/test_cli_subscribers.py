"""`newsletter subscribers ...` on a real temporary project: exit codes and exact messages."""

from __future__ import annotations

import csv
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
from typer.testing import CliRunner

from newsletter.audience import SubscriberStore
from newsletter.cli._output import visible
from newsletter.cli.subscribers import app
from newsletter.errors import NewsletterError

DATABASE_NAME = "newsletter.db"  # the default store of a project
FIXTURES = Path(__file__).parent / "fixtures" / "csv"

MINIMAL_CONFIG = """\
[newsletter]
name = "Garden Club"
from = "Garden Club <club@example.org>"

[footer]
address = "1 Garden Lane, Springfield"
"""


@dataclass
class Result:
    exit_code: int
    out: str
    err: str


class Run(Protocol):
    """The subscribers sub-app run in-process from `cwd` (the project by default)."""

    def __call__(self, *args: str, cwd: Path | None = None) -> Result: ...


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "club"
    root.mkdir()
    (root / "newsletter.toml").write_text(MINIMAL_CONFIG, encoding="utf-8")
    return root


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, project: Path) -> Run:
    """Invoke the sub-app the way the main CLI does: a NewsletterError is exit 1 and its text."""
    runner = CliRunner()

    def invoke(*args: str, cwd: Path | None = None) -> Result:
        monkeypatch.chdir(cwd or project)
        result = runner.invoke(app, list(args))
        error = result.exception
        if isinstance(error, NewsletterError):
            err = result.stderr + f"error: {error.message}\n"
            if error.hint:
                err += f"hint: {error.hint}\n"
            return Result(error.exit_code, result.stdout, err)
        if error is not None and not isinstance(error, SystemExit):
            raise error
        return Result(result.exit_code, result.stdout, result.stderr)

    return invoke


def store_of(project: Path) -> SubscriberStore:
    return SubscriberStore(project / DATABASE_NAME)


def test_outside_a_project(run: Run, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run("count", cwd=elsewhere)
    assert result.exit_code == 1
    assert result.err == (
        "error: no newsletter.toml here or in any parent folder\n"
        "hint: Run 'newsletter init' to create a project, or change to the project folder.\n"
    )
    assert not (elsewhere / DATABASE_NAME).exists()


def test_a_subfolder_uses_the_projects_database(run: Run, project: Path) -> None:
    sub = project / "issues" / "2026-11"
    sub.mkdir(parents=True)
    assert run("add", "ann@example.org", cwd=sub).exit_code == 0
    assert (project / DATABASE_NAME).is_file()
    assert not (sub / DATABASE_NAME).exists()


# --- import -------------------------------------------------------------------------------------


def test_import_prints_counts_and_problems(run: Run, project: Path) -> None:
    (project / "members.csv").write_text(
        'email,name\nann@example.org,Ann\n,Nobody\n"bob@example.org\nBcc: x@y.org",Bob\n'
        'ANN@example.org,Ann again\ncat@example.org,"[red]Cat[/red]"\n',
        encoding="utf-8",
    )
    result = run("import", "members.csv")
    assert result.exit_code == 0, result.err
    assert result.out == (
        "Imported members.csv: 2 added, 0 updated, 0 unchanged, 0 kept unsubscribed, 3 skipped\n"
    )
    assert result.err == (
        "members.csv:3: empty email address\n"
        "members.csv:4: the email address 'bob@example.org\\nBcc: x@y.org' contains a line break\n"
        "members.csv:6: duplicate of line 2 (ANN@example.org)\n"
    )
    with store_of(project) as store:
        cat = store.get("cat@example.org")
        assert cat is not None and cat.name == "[red]Cat[/red]"


def test_strict_import_imports_nothing(run: Run, project: Path) -> None:
    (project / "members.csv").write_text(
        "email,name\nann@example.org,Ann\nnot-an-address,X\n", encoding="utf-8"
    )
    result = run("import", "members.csv", "--strict")
    assert result.exit_code == 1
    assert result.out == ""
    assert result.err == (
        "error: members.csv: 1 problem; nothing was imported\n"
        "  members.csv:3: 'not-an-address' is not a valid email address: An email address must "
        "have an @-sign.\n"
        "hint: Fix the rows, or import without --strict to skip them.\n"
    )
    assert run("count").out.splitlines()[-1].split() == ["total", "0"]


def test_import_with_column_options_and_a_tab_delimiter(run: Run, project: Path) -> None:
    (project / "leden.tsv").write_text(
        "Adres\tRoepnaam\tFamilienaam\tWijk\nann@example.org\tAnn\tDe Wit\tNoord\n",
        encoding="utf-8",
    )
    result = run(
        "import",
        "leden.tsv",
        "--email-column",
        "adres",
        "--first-name-column",
        "Roepnaam",
        "--last-name-column",
        "FAMILIENAAM",
        "--delimiter",
        "tab",
    )
    assert result.exit_code == 0, result.err
    assert result.out.startswith("Imported leden.tsv: 1 added,")
    with store_of(project) as store:
        ann = store.get("ann@example.org")
    assert ann is not None
    assert (ann.name, ann.last_name, dict(ann.attributes)["wijk"]) == (
        "Ann De Wit",
        "De Wit",
        "Noord",
    )


def test_import_errors(run: Run, project: Path) -> None:
    result = run("import", "missing.csv")
    assert (result.exit_code, result.err) == (1, "error: missing.csv: no such file\n")
    (project / "odd.csv").write_text("Naam,Adres\nAnn,ann@example.org\n", encoding="utf-8")
    result = run("import", "odd.csv")
    assert result.exit_code == 1
    assert (
        result.err.splitlines()[0]
        == "error: odd.csv: no email column; the header has 'Naam', 'Adres'"
    )
    result = run("import", "odd.csv", "--name-column", "Voornaam")
    assert result.err.splitlines()[0] == (
        "error: odd.csv: no column 'Voornaam' for the name; the header has 'Naam', 'Adres'"
    )


def test_reimport_keeps_unsubscribed_people_unsubscribed(run: Run, project: Path) -> None:
    shutil.copy(FIXTURES / "plain.csv", project / "plain.csv")
    assert run("import", "plain.csv").exit_code == 0
    assert run("unsubscribe", "sam@example.org").out == "Unsubscribed sam@example.org\n"
    result = run("import", "plain.csv")
    assert result.out == (
        "Imported plain.csv: 0 added, 0 updated, 1 unchanged, 1 kept unsubscribed\n"
        "1 had unsubscribed, bounced or complained and were left so (--resubscribe subscribes "
        "them again, only if they asked).\n"
    )
    result = run("import", "plain.csv", "--resubscribe")
    assert result.out == (
        "Imported plain.csv: 0 added, 0 updated, 1 unchanged, 0 kept unsubscribed, 1 resubscribed\n"
    )


# --- one subscriber -----------------------------------------------------------------------------


def test_add_update_and_attributes(run: Run, project: Path) -> None:
    result = run("add", "Ann@Example.ORG", "--name", "Ann Smith", "--attr", "city=Gent")
    assert (result.exit_code, result.out) == (0, "Added Ann Smith <Ann@example.org>\n")
    result = run("add", "ann@example.org", "--attr", "Favourite Colour=green", "--attr", "x=a=b")
    assert result.out == "Updated Ann Smith <ann@example.org>\n"
    with store_of(project) as store:
        ann = store.get("ann@example.org")
    assert ann is not None
    assert dict(ann.attributes) == {"city": "Gent", "favourite_colour": "green", "x": "a=b"}


def test_names_are_printed_literally(run: Run) -> None:
    result = run("add", "eve@example.org", "--name", "[bold]Eve[/bold] <script>")
    assert result.out == "Added [bold]Eve[/bold] <script> <eve@example.org>\n"
    assert "[bold]Eve[/bold] <script>" in run("list").out


@pytest.mark.parametrize(
    ("args", "code", "err"),
    [
        (("add", "ann@localhost"), 1,
         "error: 'ann@localhost' is not a valid email address: The part after the @-sign is not "
         "valid. It should have a period.\n"),
        (("add", "ann@example.org", "--name", "Ann\nBcc: x@y.org"), 1,
         "error: the name 'Ann\\nBcc: x@y.org' contains a line break\n"),
        (("add", "ann@example.org", "--attr", "email=x"), 1,
         "error: attribute 'email' would hide the subscriber's email; give it another name\n"),
        (("remove", "nobody@example.org"), 1, "error: no subscriber nobody@example.org\n"),
        (("unsubscribe", "nobody@example.org"), 1, "error: no subscriber nobody@example.org\n"),
        (("list", "--status", "gone"), 1,
         "error: unknown status 'gone' (use subscribed, unsubscribed, bounced, complained, "
         "unconfirmed)\n"),
    ],
)  # fmt: skip
def test_refusals(run: Run, args: tuple[str, ...], code: int, err: str) -> None:
    result = run(*args)
    assert (result.exit_code, result.err, result.out) == (code, err, "")


def test_an_attribute_without_equals(run: Run) -> None:
    result = run("add", "ann@example.org", "--attr", "city")
    assert result.exit_code == 1
    assert result.err == (
        "error: --attr 'city' is not key=value\nhint: For example: --attr city=Gent\n"
    )
    assert run("count").out.splitlines()[-1].split() == ["total", "0"]


def test_adding_someone_who_unsubscribed(run: Run) -> None:
    run("add", "ann@example.org", "--name", "Ann")
    run("unsubscribe", "ann@example.org")
    result = run("add", "ann@example.org", "--name", "Ann Smith")
    assert result.exit_code == 1
    assert result.err == (
        "error: ann@example.org is unsubscribed; not subscribed again\n"
        "hint: Pass --resubscribe only if they asked to be subscribed again.\n"
    )
    assert "Ann Smith" not in run("list", "--status", "all").out  # nothing changed
    result = run("add", "ann@example.org", "--name", "Ann Smith", "--resubscribe")
    assert (result.exit_code, result.out) == (0, "Subscribed again Ann Smith <ann@example.org>\n")


def test_remove_and_unsubscribe(run: Run) -> None:
    run("add", "ann@example.org")
    run("add", "bob@example.org")
    assert run("unsubscribe", "BOB@example.org").out == "Unsubscribed bob@example.org\n"
    assert run("unsubscribe", "bob@example.org").out == "bob@example.org was already unsubscribed\n"
    assert run("remove", "ann@example.org").out == "Removed ann@example.org\n"
    assert run("list", "--status", "all").out.count("@example.org") == 1


# --- the whole list -----------------------------------------------------------------------------


def test_list_and_count(run: Run) -> None:
    assert run("list").out == "No subscribed subscribers.\n"
    for address in ("cat@example.org", "ann@example.org", "bob@example.org"):
        run("add", address)
    run("unsubscribe", "bob@example.org")
    out = run("list").out
    assert out.index("ann@example.org") < out.index("cat@example.org")
    assert "bob@example.org" not in out
    assert "bob@example.org" in run("list", "--status", "unsubscribed").out
    assert run("list", "--status", "all").out.count("@example.org") == 3
    limited = run("list", "--limit", "1").out
    assert "ann@example.org" in limited
    assert "cat@example.org" not in limited
    assert limited.endswith("1 of 2 subscribed subscribers shown (--limit 0 shows all)\n")
    counts = [line.split() for line in run("count").out.splitlines()]
    assert counts == [
        ["subscribed", "2"],
        ["unsubscribed", "1"],
        ["bounced", "0"],
        ["complained", "0"],
        ["unconfirmed", "0"],
        ["total", "3"],
    ]


def test_export_to_a_file_and_to_stdout_round_trips(
    run: Run, project: Path, tmp_path: Path
) -> None:
    run("add", "ann@example.org", "--name", 'Ann "A, B" Smith', "--attr", "city=Gent")
    run("add", "jörg@exämple.de", "--name", "Jörg")
    run("unsubscribe", "jörg@exämple.de")
    result = run("export", "backup.csv")
    assert (result.exit_code, result.out) == (0, "Exported 2 subscribers to backup.csv\n")
    assert not (project / "backup.csv.partial").exists()
    written = (project / "backup.csv").read_bytes().decode("utf-8")
    assert written == (
        "email,name,status,city\r\n"
        'ann@example.org,"Ann ""A, B"" Smith",subscribed,Gent\r\n'
        "jörg@exämple.de,Jörg,unsubscribed,\r\n"
    )
    result = run("export")
    assert result.out == written.replace("\r\n", "\n")  # click's runner folds CRLF
    assert result.err == "Exported 2 subscribers\n"
    assert len(run("export", "-", "--status", "subscribed").out.splitlines()) == 2

    other = tmp_path / "other"
    other.mkdir()
    (other / "newsletter.toml").write_text(MINIMAL_CONFIG, encoding="utf-8")
    shutil.copy(project / "backup.csv", other / "backup.csv")
    result = run("import", "backup.csv", "--strict", cwd=other)
    assert (
        result.out == "Imported backup.csv: 2 added, 0 updated, 0 unchanged, 0 kept unsubscribed\n"
    )
    assert run("export", cwd=other).out == written.replace("\r\n", "\n")


def test_export_to_an_unwritable_place(run: Run) -> None:
    result = run("export", "no/such/folder/out.csv")
    assert result.exit_code == 1
    assert result.err == (
        "error: no/such/folder/out.csv: cannot write the export (No such file or directory)\n"
    )


@pytest.mark.parametrize(
    "command", ["import", "add", "remove", "unsubscribe", "list", "export", "count"]
)
def test_every_command_has_help_with_an_example(run: Run, command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert re.search(r"Examples?:", result.out)
    assert "newsletter subscribers " + command in result.out


def test_sync_pulls_provider_suppressions_into_the_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from newsletter.cli.subscribers import app as subscribers_app
    from tests.conftest import copy_example_project
    from tests.providerfake import ProviderFake
    from tests.test_suppressions import SendGridLists

    project = copy_example_project(tmp_path / "project")
    config = project / "newsletter.toml"
    with ProviderFake() as server:
        SendGridLists(server)
        config.write_text(
            config.read_text().replace(
                'kind = "outbox"', f'kind = "sendgrid"\napi_url = "{server.url}"'
            )
        )
        with SubscriberStore(project / "newsletter.db") as store:
            for number in range(4):
                store.add(f"p{number}@example.org")
        monkeypatch.chdir(project)
        runner = CliRunner()
        dry = runner.invoke(
            subscribers_app, ["sync", "--dry-run"], env={"SENDGRID_API_KEY": "SG.key"}
        )
        assert dry.exit_code == 0, dry.output
        assert "Would change" in dry.output
        with SubscriberStore(project / "newsletter.db") as store:
            assert store.count("subscribed") == 4
        real = runner.invoke(subscribers_app, ["sync"], env={"SENDGRID_API_KEY": "SG.key"})
        assert real.exit_code == 0, real.output
        assert "sendgrid:" in real.output and "Changed 4 subscribers" in real.output
        with SubscriberStore(project / "newsletter.db") as store:
            assert store.count() == {
                "subscribed": 0,
                "unsubscribed": 1,
                "bounced": 2,
                "complained": 1,
                "unconfirmed": 0,
            }
        refused = runner.invoke(subscribers_app, ["sync"], env={"SENDGRID_API_KEY": "wrong"})
        assert refused.exit_code == 1


def test_list_never_cuts_an_address(run: Run, project: Path) -> None:
    long = "maria.van.der.berg-de.jong.secretariaat@bewonersvereniging-de-linde.example.org"
    (project / "members.csv").write_text(
        f"email,name,plot,committee\n{long},Maria van der Berg-de Jong,12,garden and compost\n",
        encoding="utf-8",
    )
    assert run("import", "members.csv").exit_code == 0
    result = run("list")
    assert result.exit_code == 0, result.err
    assert long in result.out
    assert "…" not in result.out


def test_dutch_excel_csv_with_encoding_or_a_named_guess(run: Run, project: Path) -> None:
    (project / "leden.csv").write_bytes(
        "E-mailadres;Voornaam;Tussenvoegsel;Achternaam\n"
        "jan@example.org;Jan;van der;Berg\nzoe@example.org;Zoë;;Müller\n".encode("cp1252")
    )
    result = run("import", "leden.csv")
    assert result.exit_code == 0, result.err
    assert "warning: leden.csv: not UTF-8; read as Windows-1252" in result.err
    assert "--encoding" in result.err
    again = run("import", "leden.csv", "--encoding", "cp1252")
    assert again.exit_code == 0 and "warning" not in again.err
    with store_of(project) as store:
        jan = store.get("jan@example.org")
        zoe = store.get("zoe@example.org")
        assert jan is not None and jan.name == "Jan van der Berg"
        assert zoe is not None and zoe.name == "Zoë Müller"


# --- hostile names (issue 15: D14) --------------------------------------------------------------

HOSTILE_NAME = "Eve\x1b[2J\x1b]0;pwned\x07 \u202egnp.exe\x9b31m\x00"


def test_list_shows_control_characters_as_visible_escapes(run: Run, project: Path) -> None:
    (project / "hostile.csv").write_text(
        f'email,name,city\neve@example.org,"{HOSTILE_NAME}","\x1b[31mGent\u2066"\n',
        encoding="utf-8",
    )
    assert run("import", "hostile.csv").exit_code == 0
    out = run("list").out
    for raw in ("\x1b", "\x07", "\u202e", "\u2066", "\x9b", "\x00"):
        assert raw not in out
    assert "Eve\\x1b[2J" in out  # the table may cut the rest to fit the terminal
    assert visible(HOSTILE_NAME) == "Eve\\x1b[2J\\x1b]0;pwned\\x07 \\u202egnp.exe\\x9b31m\\x00"
    # The stored name is unchanged: only the display is escaped.
    with store_of(project) as store:
        eve = store.get("eve@example.org")
    assert eve is not None and eve.name == HOSTILE_NAME


FORMULAS = ['=HYPERLINK("https://evil.example","Click")', "+1+1", "-2+3", "@SUM(1)"]


def test_export_neutralises_spreadsheet_formulas_and_import_undoes_it(
    run: Run, project: Path, tmp_path: Path
) -> None:
    quoted = [name.replace('"', '""') for name in FORMULAS]
    rows = "".join(
        f'user{n}@example.org,"{name}","{FORMULAS[n].replace(chr(34), "")}"\n'
        for n, name in enumerate(quoted)
    )
    (project / "in.csv").write_text("email,name,note\n" + rows, encoding="utf-8")
    assert run("import", "in.csv", "--strict").exit_code == 0
    assert run("export", "out.csv").exit_code == 0
    with (project / "out.csv").open(newline="", encoding="utf-8") as handle:
        exported = list(csv.reader(handle))[1:]
    names = [row[1] for row in exported]
    notes = [row[3] for row in exported]
    assert names == ["'" + name for name in FORMULAS]
    assert all(note.startswith("'") for note in notes)
    # Re-imported, the values are the originals again.
    other = tmp_path / "other"
    other.mkdir()
    (other / "newsletter.toml").write_text(MINIMAL_CONFIG, encoding="utf-8")
    shutil.copy(project / "out.csv", other / "out.csv")
    assert run("import", "out.csv", "--strict", cwd=other).exit_code == 0
    with store_of(other) as store:
        for n, name in enumerate(FORMULAS):
            found = store.get(f"user{n}@example.org")
            assert found is not None and found.name == name.strip()
            assert found.attributes["note"] == name.replace('"', "").strip()
