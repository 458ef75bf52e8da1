"""Runners this job cannot run on correctly are refused at launch, with the reason."""
import pytest

from pipeline.main import main


@pytest.mark.parametrize("runner", ["DaskRunner", "dask", "apache_beam.runners.dask.dask_runner.DaskRunner"])
def test_dask_runner_is_refused_with_its_reason(tmp_path, tiny_checkpoint, capsys, runner):
    code = main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--model", tiny_checkpoint,
                 "--runner", runner])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--runner DaskRunner is not supported" in err[0]
    assert "tagged outputs" in err[0] and "last sink" in err[0] and "no metrics" in err[0]
    assert not (tmp_path / "out").exists()
