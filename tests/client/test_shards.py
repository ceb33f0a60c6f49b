"""`convert --shard`: N runs (an Indexed Job's pods) split one archive, each file in exactly one part."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.conftest import RGB_MODEL
from tilecast.cli import app
from tilecast.client.archive import Job, Shard, plan_jobs, shard_jobs, shard_of
from tilecast.proto.errors import InvalidOption
from tilecast.server.app import ServerThread

runner = CliRunner()
OUT = Path("out")
names = st.lists(st.text("abcxyz/._-0123456789", min_size=1, max_size=12), unique=True, max_size=60)


def jobs_named(keys: list[str]) -> list[Job]:
    return [Job(Path("in") / key, OUT / key) for key in keys]


@given(names, st.integers(1, 9))
def test_the_parts_cover_every_file_exactly_once(keys: list[str], count: int) -> None:
    jobs = jobs_named(keys)
    taken = Counter(job for index in range(count) for job in shard_jobs(jobs, Shard(index, count), OUT))
    assert taken == Counter(jobs)


@given(names, names, st.integers(1, 9))
def test_adding_files_moves_no_file_to_another_part(before: list[str], added: list[str], count: int) -> None:
    old, new = jobs_named(before), jobs_named(before + [k for k in added if k not in before])
    for index in range(count):
        part = Shard(index, count)
        assert set(shard_jobs(old, part, OUT)) == set(shard_jobs(new, part, OUT)) & set(old)


def test_one_part_is_everything_and_no_shard_is_everything() -> None:
    jobs = jobs_named([f"case{i}/slide.tif" for i in range(20)])
    assert shard_jobs(jobs, Shard(0, 1), OUT) == jobs == shard_jobs(jobs, None, OUT)


JOB = {"JOB_COMPLETION_INDEX": "2"}


@pytest.mark.parametrize(("given_", "count", "env", "expected"), [
    ("", 0, {}, None),
    ("", 0, JOB, None),  # an Indexed Job without a count: nothing says how many parts
    ("1/3", 0, JOB, Shard(1, 3)),  # a given part wins over the pod's index
    (" 0 / 2 ", 2, {}, Shard(0, 2)),
    ("auto", 4, JOB, Shard(2, 4)),
    ("AUTO", 3, JOB, Shard(2, 3)),
    ("", 4, JOB, Shard(2, 4)),  # JOB_COMPLETION_INDEX and TILECAST_SHARD_COUNT alone
])
def test_which_part(given_: str, count: int, env: dict[str, str], expected: Shard | None) -> None:
    assert shard_of(given_, count, env) == expected


@pytest.mark.parametrize(("given_", "count", "env"), [
    ("3/2", 0, {}), ("-1/4", 0, {}), ("a/b", 0, {}), ("0/0", 0, {}), ("2", 0, {}), ("1/2/3", 0, {}),
    ("1/2", 3, {}),  # two counts that disagree
    ("auto", 0, JOB),  # no count
    ("auto", 4, {}),  # not in an Indexed Job
    ("auto", 2, JOB),  # index 2 of 2 parts
    ("", -1, {}),
])
def test_bad_parts_are_refused(given_: str, count: int, env: dict[str, str]) -> None:
    with pytest.raises(InvalidOption):
        shard_of(given_, count, env)


@pytest.mark.parametrize("value", ["3/2", "-1/4", "a/b", "0/0"])
def test_a_bad_shard_is_one_line_and_exit_2(value: str) -> None:
    result = runner.invoke(app, ["convert", "missing.tif", "-m", "any", "-s", "127.0.0.1:1", "--shard", value])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())  # one message (the console wraps it at its width)
    assert said.startswith(f"error: --shard '{value}': give INDEX/COUNT") and said.count("error") == 1, said


def make_folder(root: Path, count: int) -> list[str]:
    rng = np.random.default_rng(1)
    names = []
    for i in range(count):
        path = root / f"case{i % 3}" / f"slide{i}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, rng.integers(0, 256, (32 + i, 48, 3), np.uint8), photometric="rgb")
        names.append(str(path))
    return names


def converted(result_stdout: str) -> list[str]:
    return [o["source"] for o in json.loads(result_stdout) if o["status"] == "converted"]


def test_two_shards_convert_each_file_of_a_folder_once(tmp_path: Path, server: ServerThread) -> None:
    sources = make_folder(tmp_path / "in", 9)
    base = ["convert", str(tmp_path / "in"), "-m", RGB_MODEL, "-s", f"127.0.0.1:{server.port}",
            "-o", str(tmp_path / "out"), "--tile-size", "64", "--json"]
    first = runner.invoke(app, [*base, "--shard", "0/2"])
    # the second the way an Indexed Job's pod runs: its index from Kubernetes, the count and a dns:/// address
    # (the headless Service's form, deploy/archive-job.yaml) from the environment
    pod = {"JOB_COMPLETION_INDEX": "1", "TILECAST_SHARD_COUNT": "2",
           "TILECAST_SERVER": f"dns:///localhost:{server.port}"}
    second = runner.invoke(app, [a for a in base if a not in ("-s", f"127.0.0.1:{server.port}")], env=pod)
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    parts = [converted(first.stdout), converted(second.stdout)]
    assert all(parts), parts  # nine files: each part has some (as the hash falls for these names)
    assert Counter(parts[0] + parts[1]) == Counter(sources)
    outputs = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.tif"))
    assert outputs == sorted(Path(s).relative_to(tmp_path / "in").as_posix() for s in sources)
    again = plan_jobs([str(tmp_path / "in")], tmp_path / "out")
    assert {str(j.source) for j in shard_jobs(again, Shard(0, 2), tmp_path / "out")} == set(parts[0])


def test_a_part_with_no_files_converts_nothing_and_succeeds(tmp_path: Path, server: ServerThread) -> None:
    """More pods than files: the pods whose part is empty finish at once, successfully."""
    (source,) = make_folder(tmp_path / "in", 1)
    args = ["convert", str(tmp_path / "in"), "-m", RGB_MODEL, "-s", f"127.0.0.1:{server.port}",
            "-o", str(tmp_path / "out"), "--tile-size", "64", "--json", "--shard-count", "4"]
    results = [runner.invoke(app, [*args, "--shard", "auto"], env={"JOB_COMPLETION_INDEX": str(i)}) for i in range(4)]
    assert [r.exit_code for r in results] == [0, 0, 0, 0], [r.output for r in results]
    parts = [converted(r.stdout) for r in results]
    assert sorted(parts, key=len) == [[], [], [], [source]], parts
    assert parts.index([source]) == next(i for i in range(4) if Shard(i, 4).takes("case0/slide0.tif"))
