"""Launch guards: unknown options are refused; a run with too many errors is not published."""
import os

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.demo.audio import noise, tone, write_audio
from pipeline.runs.error_budget import ErrorFractionExceeded, check_error_fraction
from pipeline.main import main
from pipeline.launch.options import unknown_options
from pipeline.runs.publish import finished_runs
from pipeline.runs.layout import manifest_path


# ---------------------------------------------------------------- unknown options

def test_a_typo_is_refused_with_exit_2_and_the_nearest_option(tmp_path, tiny_checkpoint, capsys):
    code = main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--model", tiny_checkpoint,
                 "--emit_score"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown option --emit_score (did you mean --emit_scores?)" in err
    assert not os.path.exists(tmp_path / "out")        # refused before anything was written


def test_every_unknown_option_is_named_with_its_value_form(tmp_path, tiny_checkpoint, capsys):
    code = main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--model", tiny_checkpoint,
                 "--hop_second=5", "--max_error_fractions", "0.1", "stray"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown option --hop_second (did you mean --hop_seconds?)" in err
    assert "unknown option --max_error_fractions (did you mean --max_error_fraction?)" in err
    assert "unexpected argument 'stray'" in err
    assert "'0.1'" not in err      # taken as the unknown option's value, not reported twice


def test_beam_options_of_every_registered_class_pass_through():
    beam_args = ["--runner", "PortableRunner", "--direct_num_workers", "2", "--direct_running_mode",
                 "multi_processing", "--s3_endpoint_url", "http://127.0.0.1:1", "--setup_file", "./setup.py",
                 "--experiments", "beam_fn_api", "--flink_master", "localhost:8081", "--environment_type",
                 "EXTERNAL", "--environment_config", "localhost:5000", "--job_endpoint", "localhost:8099",
                 "--temp_location", "/tmp/x", "--sdk_worker_parallelism", "2", "--save_main_session",
                 "--default_sdk_harness_log_level", "DEBUG", "--spark_master_url", "local[2]",
                 "--azure_connection_string=x", "--hdfs_host", "h", "--type_check_strictness", "ALL_REQUIRED",
                 "--input", "x", "--max_sample_bytes", "1000", "--max_error_fraction", "1.0"]
    assert unknown_options(beam_args) == []


def test_a_registered_third_party_options_class_passes_through():
    [refused] = unknown_options(["--my_plugin_setting", "3"])
    assert refused.startswith("unknown option --my_plugin_setting")

    class PluginOptions(PipelineOptions):   # registered by being defined, as Beam does it
        @classmethod
        def _add_argparse_args(cls, parser):
            parser.add_argument("--my_plugin_setting", type=int)

    assert unknown_options(["--my_plugin_setting", "3"]) == []


# ---------------------------------------------------------------- --max_error_fraction

def counts(discovered, errored, **by_type):
    return {"discovered": discovered, "labelled": discovered - errored, "errored": errored, "skipped": 0,
            "errors_by_type": {k.replace("__", "/"): v for k, v in by_type.items()}}


def test_error_fraction_limit():
    check_error_fraction(counts(100, 25), 0.25)          # at the limit: fine
    check_error_fraction(counts(100, 100), 1.0)          # 1.0 disables
    check_error_fraction(counts(0, 0), 0.0)              # nothing discovered: no fraction
    with pytest.raises(ErrorFractionExceeded) as info:
        check_error_fraction(counts(100, 26, decode__AudioDecodeError=20, read__ReadError=6), 0.25)
    message = str(info.value)
    assert "26 of 100 discovered inputs (26.0%)" in message and "--max_error_fraction 0.25" in message
    assert "decode/AudioDecodeError: 20, read/ReadError: 6" in message
    with pytest.raises(ErrorFractionExceeded):
        check_error_fraction(counts(10, 1), 0.0)


@pytest.fixture(scope="module")
def corpus_30_percent_corrupt(tmp_path_factory):
    """7 good files, 3 corrupt ones (two undecodable, one too short for a frame)."""
    folder = tmp_path_factory.mktemp("corrupt30")
    for i in range(7):
        write_audio(str(folder / f"good_{i}.wav"), tone(1.0 + i % 3, 16000, 300.0 + 50 * i) + noise(1.0 + i % 3, 16000, i),
                    16000)
    (folder / "bad_0.wav").write_bytes(b"RIFF not really a wave file" * 10)
    (folder / "bad_1.flac").write_bytes(os.urandom(3000))
    write_audio(str(folder / "bad_2.wav"), tone(200 / 16000, 16000), 16000)
    return str(folder)


def test_30_percent_corrupt_over_the_limit_fails_and_publishes_nothing(corpus_30_percent_corrupt, tiny_checkpoint,
                                                                       tmp_path, capsys):
    out = str(tmp_path / "out")
    code = main(["--input", corpus_30_percent_corrupt, "--output", out, "--model", tiny_checkpoint,
                 "--batch_size", "4", "--run_id", "strict", "--max_error_fraction", "0.1"])
    assert code != 0
    err = capsys.readouterr().err
    assert "3 of 10 discovered inputs (30.0%) ended in the errors table" in err
    assert "--max_error_fraction 0.1" in err and "7 labelled" in err
    assert "decode/AudioDecodeError: 2" in err and "features/WaveformTooShortError: 1" in err
    assert finished_runs(out) == []
    assert not os.path.exists(manifest_path(out, "strict"))


def test_30_percent_corrupt_with_the_check_disabled_publishes(corpus_30_percent_corrupt, tiny_checkpoint,
                                                              tmp_path, capsys):
    out = str(tmp_path / "out")
    code = main(["--input", corpus_30_percent_corrupt, "--output", out, "--model", tiny_checkpoint,
                 "--batch_size", "4", "--run_id", "lenient", "--max_error_fraction", "1.0"])
    assert code == 0
    assert finished_runs(out) == ["lenient"]
    assert "inputs errored:    3" in capsys.readouterr().out


def test_max_error_fraction_out_of_range_is_a_usage_error(tmp_path, tiny_checkpoint):
    assert main(["--input", str(tmp_path), "--output", str(tmp_path / "o"), "--model", tiny_checkpoint,
                 "--max_error_fraction", "1.5"]) == 2
