"""Static partition ranges: planning them and checking that a set covers a hub."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from durafka.cli import app as cli
from durafka.deploy import (
    coverage_problems,
    format_range,
    ordinal_of,
    parse_partition_list,
    plan_ranges,
    pod_range,
)
from durafka.errors import ConfigurationError


def test_plans_cover_every_partition_once_with_sizes_one_apart() -> None:
    for partitions in range(1, 25):
        for pods in range(1, partitions + 1):
            ranges = plan_ranges(partitions, pods)
            assert len(ranges) == pods
            assert coverage_problems(ranges, partitions) == []
            sizes = [len(parse_partition_list(r)) for r in ranges]
            assert max(sizes) - min(sizes) <= 1


def test_more_pods_than_partitions_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="at most 4 pods"):
        plan_ranges(4, 5)


def test_overlaps_gaps_and_missing_partitions_are_named() -> None:
    problems = coverage_problems(["0-5", "3-7", "9-12"], 12)
    assert problems == [
        "partitions 3, 4, 5 are in more than one range: 0-5, 3-7",
        "partitions 8 are in no range: nobody would process them",
        "partitions 12 do not exist (the hub has 12)",
    ]


def test_partition_lists_parse_and_format_back() -> None:
    assert parse_partition_list("0-3,6, 8-9") == [0, 1, 2, 3, 6, 8, 9]
    assert format_range([0, 1, 2, 3, 6, 8, 9]) == "0-3,6,8-9"
    for bad in ("a-b", "3-1", "-1", ""):
        with pytest.raises(ConfigurationError):
            parse_partition_list(bad)


def test_the_command_prints_a_plan_and_checks_ranges() -> None:
    runner = CliRunner()
    planned = runner.invoke(cli, ["deploy", "plan", "--pods", "3", "--partitions", "8"])
    assert planned.exit_code == 0, planned.output
    assert planned.output.split() == ["0-2", "3-5", "6-7"]
    ok = runner.invoke(cli, ["deploy", "check", "0-2", "3-5", "6-7", "--partitions", "8"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(cli, ["deploy", "check", "0-5", "3-7", "--partitions", "8"])
    assert bad.exit_code == 1
    assert "partitions 3, 4, 5 are in more than one range" in bad.output


def test_a_pod_takes_the_range_of_its_ordinal() -> None:
    assert [pod_range(12, 5, i) for i in range(5)] == plan_ranges(12, 5)
    assert ordinal_of("durafka-processor-3") == 3
    assert ordinal_of("a-b-12") == 12
    for name in ("durafka-processor", "processor-x", "7"):
        with pytest.raises(ConfigurationError, match="StatefulSet"):
            ordinal_of(name)
    # More replicas than --pods says: the extra pod refuses to start, naming the fix.
    with pytest.raises(ConfigurationError, match="change --pods together with the StatefulSet"):
        pod_range(12, 3, 3)


def test_processor_pod_options_are_checked_before_anything_runs() -> None:
    runner = CliRunner()
    for args, message in (
        (["--pods", "2"], "exactly one of --pod-index, --ordinal-from-hostname"),
        (["--pods", "2", "--pod-index", "0", "--ordinal-from-hostname"], "exactly one"),
        (["--pods", "2", "--pod-index", "0", "--partitions", "0-3"], "either --partitions"),
        (["--pod-index", "1"], "need --pods"),
        (["--pods", "2", "--pod-index", "2"], "pod index 2 is not one of the 2 pods"),
        # More pods than partitions (the app's count, whatever earlier tests imported).
        (["--pods", "999", "--pod-index", "0"], "at most"),
    ):
        result = runner.invoke(
            cli,
            ["processor", "examples.hello:app", "--bootstrap", "memory://", *args],
            env={"DURAFKA_PARTITIONS": "8"},
        )
        assert result.exit_code == 2, (args, result.output)
        # The message as one line, without the box rich draws around it.
        text = " ".join(result.output.replace("│", " ").split())
        assert message in text, (args, result.output)
