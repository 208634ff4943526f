"""The id rules (durafka.ids) and the store keys that cannot let one id run into another."""

from __future__ import annotations

import os
import random

import pytest

from durafka import EntityId
from durafka.errors import InvalidInstanceIdError, MalformedKeyError
from durafka.ids import (
    MAX_ID_LENGTH,
    check_instance_id,
    check_orchestration_id,
    new_id,
    split_entity_id,
)
from durafka.state.keys import (
    check_store_key,
    entity_key,
    history_key,
    history_prefix,
    instance_key,
    parse_timer_key,
    timer_key,
)

VALID = ["a", "order-42", "with/slash", "ünïcødé", "x" * MAX_ID_LENGTH, "a@b", "spaces are ok"]


@pytest.mark.parametrize("iid", VALID)
def test_valid_orchestration_ids_pass(iid: str) -> None:
    assert check_orchestration_id(iid) == iid
    assert check_instance_id(iid) == iid


@pytest.mark.parametrize(
    ("iid", "word"),
    [
        ("", "empty"),
        ("x" * (MAX_ID_LENGTH + 1), "longer than 256"),
        ("v\x00retry", "NUL"),
        ("line\nbreak", "control character"),
        ("del\x7f", "control character"),
        ("c1\x85", "control character"),
        ("lone\ud800", "surrogate"),
        ("@counter@x", "entity ids"),
        (42, "must be a str"),
    ],
)
def test_invalid_orchestration_ids_are_refused_with_the_rule(iid: object, word: str) -> None:
    with pytest.raises(InvalidInstanceIdError, match=word) as info:
        check_orchestration_id(iid)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)  # what the clients raised before


def test_entity_ids_are_instance_ids_when_they_parse() -> None:
    assert check_instance_id("@counter@x") == "@counter@x"
    assert split_entity_id("@counter@a@b") == ("counter", "a@b")
    for bad in ["@", "@counter", "@@x", "@c@", "@c@\x00", "@" + "c" * 300 + "@k"]:
        with pytest.raises(InvalidInstanceIdError):
            check_instance_id(bad)
    with pytest.raises(InvalidInstanceIdError, match="control character"):
        EntityId("counter", "tab\there")


def test_store_keys_of_valid_ids_keep_their_layout() -> None:
    # Existing changelogs stay readable: the bytes of valid ids' keys are unchanged.
    assert instance_key("a/b") == b"i/a/b\x00"
    assert history_prefix("a") == b"h/a\x00"
    assert history_key("a", 3) == b"h/a\x0000000003"
    assert entity_key("@c@k") == b"e/@c@k\x00"
    assert timer_key(5, "a", -1) == b"t/000000000000005/a\x00-1"
    assert parse_timer_key(timer_key(5, "a/b", 7)) == (5, "a/b", 7)


def test_store_key_functions_refuse_nul_so_no_prefix_matches_another_id() -> None:
    # V + "\0retry" would have history keys inside V's history prefix.
    for make in (instance_key, history_prefix, entity_key, lambda i: history_key(i, 0)):
        with pytest.raises(InvalidInstanceIdError, match="NUL"):
            make("v\x00retry")
    with pytest.raises(InvalidInstanceIdError, match="NUL"):
        timer_key(1, "v\x00retry", 0)


@pytest.mark.parametrize(
    "key",
    [
        b"t/garbage",
        b"t/123",
        b"t/000000000000001/no-sequence",
        b"t/000000000000001/id\x00x",
        b"t/00000000000000x/id\x001",
        b"t/000000000000001-id\x001",
        b"t/000000000000001/\x001",
        b"t/000000000000001/\xff\x001",
    ],
)
def test_malformed_timer_keys_are_typed_errors_naming_the_key(key: bytes) -> None:
    with pytest.raises(MalformedKeyError, match="malformed timer key") as info:
        parse_timer_key(key)
    assert repr(key) in str(info.value)
    assert check_store_key(key) == str(info.value)


def test_only_timer_keys_are_checked() -> None:
    # A newer version may add kinds of keys: an older one must not call them malformed.
    assert check_store_key(b"x/something-new") is None
    assert check_store_key(b"i/whatever") is None
    assert check_store_key(timer_key(1, "a", 2)) is None


@pytest.mark.parametrize(("iid", "word"), [("a\tb", "control character"), ("@x", "entity")])
def test_the_cli_refuses_invalid_ids_before_connecting(iid: str, word: str) -> None:
    from typer.testing import CliRunner

    from durafka.cli import app

    for args in (
        ["start", "tests.e2e.apps:app", "hello_world", "--id", iid],
        ["status", "x:y", iid],
    ):
        result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
        assert result.exit_code == 2, result.output
        assert word in result.output


def test_new_ids_are_32_hex_digits_and_do_not_repeat() -> None:
    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids)
    check_orchestration_id(next(iter(ids)))


def test_seeding_the_global_random_does_not_repeat_ids() -> None:
    """User code (tests, simulations) seeds ``random``: execution ids must not follow it,
    or a restarted process would reuse an old execution's id."""
    random.seed(42)
    first = [new_id() for _ in range(3)]
    random.seed(42)
    assert [new_id() for _ in range(3)] != first


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then exit at once
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != new_id()
