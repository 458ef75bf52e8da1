"""Launch checks for runners whose workers are other machines: local paths and command-line
credentials are refused at launch (exit 2, one line) before anything runs; no cluster needed.
(The runs themselves, on a real job service with worker pools: tests/test_portable_runner.py.)"""
import json
import os
import subprocess
import sys

import pytest

from pipeline.main import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Nothing listens here: a launch that got past its checks would fail connecting, not exit 2.
PORTABLE = ["--runner", "PortableRunner", "--job_endpoint", "localhost:1",
            "--environment_type", "EXTERNAL", "--environment_config", "localhost:2"]
S3 = ["--input", "s3://bucket/in/*.wav", "--output", "s3://bucket/out", "--model", "s3://bucket/model"]


def with_option(args: list[str], name: str, value: str) -> list[str]:
    args = list(args)
    if name in args:
        args[args.index(name) + 1] = value
    else:
        args += [name, value]
    return args


def refusal(capsys, argv: list[str]) -> str:
    """main()'s exit code must be 2 and stderr one line; returns that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_local_output_on_a_portable_runner_is_refused_by_the_cli_with_exit_2_and_one_line(tmp_path):
    out = tmp_path / "tables"
    cli = subprocess.run([sys.executable, "run_pipeline.py", *with_option(S3, "--output", str(out)),
                          *PORTABLE], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": REPO})
    assert cli.returncode == 2, cli.stderr[-2000:]
    # Beam's own import warns about apitools (GCP extras not installed); the rest is ours.
    lines = [line for line in cli.stderr.strip().splitlines()
             if not line.startswith("WARNING:root:apitools not found")]
    assert len(lines) == 1 and lines[0].startswith("error: --output "), cli.stderr[-2000:]
    assert str(out) in lines[0] and "PortableRunner" in lines[0] and "--shared_filesystem" in lines[0]
    assert not out.exists()   # refused before anything was created


@pytest.mark.parametrize("option", ["--model", "--input", "--skip_labelled", "--input_manifest"])
def test_local_worker_path_on_a_portable_runner_is_refused(capsys, tmp_path, option):
    line = refusal(capsys, [*with_option(S3, option, str(tmp_path / "here")), *PORTABLE])
    assert f"--{option.removeprefix('--')} {tmp_path / 'here'} is on this machine's disk" in line


@pytest.mark.parametrize("path", ["file:///data/out", "memory://out", "relative/out"])
def test_every_kind_of_machine_local_output_is_refused(capsys, path):
    assert path in refusal(capsys, [*with_option(S3, "--output", path), *PORTABLE])


def test_local_temp_location_is_refused(capsys, tmp_path):
    line = refusal(capsys, [*S3, *PORTABLE, "--temp_location", str(tmp_path)])
    assert line.startswith(f"error: --temp_location {tmp_path} ")


def test_any_runner_but_the_direct_runner_is_checked(capsys, tmp_path):
    for runner in (["--runner", "FlinkRunner"], ["--runner", "SparkRunner"],
                   ["--runner", "apache_beam.runners.portability.portable_runner.PortableRunner"]):
        line = refusal(capsys, [*with_option(S3, "--output", str(tmp_path)), *runner])
        assert runner[1].rsplit(".", 1)[-1] in line


def test_credentials_on_the_command_line_are_refused_with_how_workers_get_theirs(capsys):
    for flags, named in (
            (["--s3_access_key_id", "AKIAEXAMPLE", "--s3_secret_access_key", "s3cr3t-value"],
             "--s3_access_key_id and --s3_secret_access_key"),
            (["--storage_options", json.dumps({"key": "AKIAEXAMPLE", "secret": "s3cr3t-value"})],
             "--storage_options")):
        line = refusal(capsys, [*S3, *PORTABLE, *flags])
        assert named in line
        assert "worker environment" in line and "IAM role" in line and "instance identity" in line
        assert "s3cr3t-value" not in line and "AKIAEXAMPLE" not in line


def test_endpoint_only_storage_options_are_not_credentials():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.launch.options import LabelAudioOptions
    from pipeline.launch.storage_settings import StorageSettings
    from pipeline.launch.worker_reach import check_worker_reach

    options = json.dumps({"client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}})
    storage, argv = StorageSettings.from_argv([*S3, *PORTABLE, "--storage_options", options,
                                               "--s3_endpoint_url", "http://127.0.0.1:1"])
    assert storage.secret_flags == []
    parsed = PipelineOptions(argv)
    assert check_worker_reach(parsed, parsed.view_as(LabelAudioOptions), storage.secret_flags) is None


def test_shared_filesystem_lets_local_paths_through(capsys, tmp_path):
    """With --shared_filesystem the paths are the user's promise: the launch goes on (and here
    stops at the missing checkpoint, a different, later error)."""
    assert main([*with_option(with_option(S3, "--output", str(tmp_path / "out")), "--model",
                              str(tmp_path / "no-model")), *PORTABLE, "--shared_filesystem"]) == 2
    err = capsys.readouterr().err
    assert "machine's disk" not in err and "no-model" in err


def test_direct_runner_and_loopback_keep_local_paths(capsys, tmp_path):
    """Workers on this machine see its disk: no refusal (the missing model is the error)."""
    local = with_option(with_option(S3, "--output", str(tmp_path / "o")), "--model", str(tmp_path / "m"))
    for runner in ([], ["--runner", "DirectRunner", "--direct_num_workers", "2",
                        "--direct_running_mode", "multi_processing"],
                   ["--runner", "PortableRunner", "--environment_type", "LOOPBACK"]):
        assert main([*local, *runner]) == 2
        err = capsys.readouterr().err
        assert "machine's disk" not in err and str(tmp_path / "m") in err
