"""OutboxTransport: atomic .eml files with safe names, from many threads at once."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest

from newsletter.delivery.transports.base import OutgoingMessage
from newsletter.delivery.transports.outbox import OutboxTransport, outbox_file_name
from newsletter.errors import TransportUnavailableError

SAFE_NAME = re.compile(r"^[A-Za-z0-9+@=][A-Za-z0-9._+@=-]*\.eml$")


def message(
    recipient: str = "ann@example.org", *, message_id: str | None = None, body: str = "Hello"
) -> OutgoingMessage:
    if message_id is None:
        message_id = f"<1.{recipient}@news.example.org>"
    data = f"To: {recipient}\r\nMessage-ID: {message_id}\r\n\r\n{body}\r\n".encode()
    return OutgoingMessage("news@example.org", recipient, message_id, data)


def eml_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.eml"))


def test_writes_the_message_and_reports_the_path(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "issue-1"  # created on demand, parents too
    sent = message()

    receipt = OutboxTransport(folder).send(sent)

    path = Path(receipt.reply)
    assert receipt.recipient == "ann@example.org"
    assert path.parent == folder
    assert path.read_bytes() == sent.data
    assert os.listdir(folder) == [path.name]  # no temporary file left behind


def test_a_resend_replaces_the_file_and_other_messages_get_their_own(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path)
    first = outbox.send(message(message_id="<a@x>", body="first"))
    again = outbox.send(message(message_id="<a@x>", body="second"))
    other = outbox.send(message(message_id="<b@x>", body="other"))

    assert first.reply == again.reply
    assert Path(again.reply).read_bytes().endswith(b"second\r\n")
    assert other.reply != first.reply
    assert len(eml_files(tmp_path)) == 2


@pytest.mark.parametrize(("one", "two"), [("<a/b@x>", "<a_b@x>"), ("<A@x>", "<a@x>")])
def test_ids_that_read_alike_still_get_different_files(one: str, two: str) -> None:
    assert outbox_file_name(message(message_id=one)) != outbox_file_name(message(message_id=two))


def test_without_message_id_the_content_tells_resends_from_new_messages(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path)
    one = outbox.send(message(message_id="", body="one"))
    one_again = outbox.send(message(message_id="", body="one"))
    two = outbox.send(message(message_id="", body="two"))

    assert one.reply == one_again.reply
    assert two.reply != one.reply
    assert len(eml_files(tmp_path)) == 2


HOSTILE = [
    "../../etc/passwd@example.org",
    "..",
    ".",
    "a/b\\c@example.org",
    "/absolute@example.org",
    "nul\x00byte@example.org",
    "new\r\nline@example.org",
    "semi;colon$(rm -rf ~)@example.org",
    ".hidden@example.org",
    "-rf@example.org",
    "CON",
    "ünïcødé@例え.jp",
    "x" * 600 + "@example.org",
    "",
]


@pytest.mark.parametrize("recipient", HOSTILE)
@pytest.mark.parametrize("use_id", [False, True], ids=["by-recipient", "by-message-id"])
def test_hostile_addresses_give_safe_names_inside_the_folder(
    recipient: str, use_id: bool, tmp_path: Path
) -> None:
    hostile = message(recipient, message_id=f"<{recipient}>" if use_id else "")

    name = outbox_file_name(hostile)
    receipt = OutboxTransport(tmp_path).send(hostile)

    assert SAFE_NAME.match(name), name
    assert len(name) <= 120
    path = Path(receipt.reply)
    assert path.name == name
    assert path.resolve().parent == tmp_path.resolve()
    assert path.read_bytes() == hostile.data


def test_a_failed_write_leaves_the_previous_file_whole_and_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = OutboxTransport(tmp_path)
    good = outbox.send(message(message_id="<a@x>", body="good"))

    def disk_full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    # Simulates the disk failing halfway through the rewrite of the same message.
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(TransportUnavailableError) as caught:
        outbox.send(message(message_id="<a@x>", body="replacement"))
    monkeypatch.undo()

    assert str(caught.value) == f"cannot write {good.reply}: No space left on device"
    assert Path(good.reply).read_bytes().endswith(b"good\r\n")
    assert os.listdir(tmp_path) == [Path(good.reply).name]


def test_threads_write_every_message_whole(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path / "outbox")
    messages = [message(f"reader{n}@example.org", body=f"body {n} " * 500) for n in range(400)]
    # Eight threads also rewrite one shared message, racing on the same file name.
    shared = [message(message_id="<shared@x>", body=f"version {n} " * 500) for n in range(8)]
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            for item in messages[index::8]:
                outbox.send(item)
            outbox.send(shared[index])
        except BaseException as err:  # surfaced in the main thread below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    files = eml_files(tmp_path / "outbox")
    assert len(files) == 401
    contents = {path.read_bytes() for path in files}
    assert {m.data for m in messages} <= contents
    [winner] = contents - {m.data for m in messages}
    assert winner in {m.data for m in shared}  # one whole version, never a mix
    assert sorted(os.listdir(tmp_path / "outbox")) == sorted(p.name for p in files)


def test_check_creates_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    OutboxTransport(folder).check()
    assert folder.is_dir() and os.listdir(folder) == []


def test_check_reports_a_folder_that_cannot_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TransportUnavailableError) as caught:
        OutboxTransport(blocker / "outbox").check()
    assert str(caught.value).startswith(f"cannot create the outbox {blocker / 'outbox'}: ")
