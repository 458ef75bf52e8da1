"""One launcher per run id: the lease in the output root, on a local disk and on SeaweedFS."""
import datetime
import json
import os
import threading
import time
import uuid

import pytest

from pipeline.main import main
from pipeline.runs.publish import finished_runs
from pipeline.runs.layout import lease_path, run_meta_dir
from pipeline.runs.lease import LeaseHeldError, RunLease
from tests.audio_corpus import write_good


def _race(make_lease) -> tuple[list, list]:
    """Two launchers taking the same run id's lease at the same moment."""
    won, refused, start = [], [], threading.Barrier(2)

    def take(name):
        lease = make_lease(name)
        start.wait()
        try:
            won.append(lease.acquire())
        except LeaseHeldError as e:
            refused.append(str(e))

    threads = [threading.Thread(target=take, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, refused


def test_a_second_launch_of_a_running_run_id_is_refused(tmp_path, tiny_checkpoint, capsys):
    audio = tmp_path / "audio"
    write_good(str(audio))
    out = str(tmp_path / "out")
    args = ["--input", str(audio), "--output", out, "--model", tiny_checkpoint, "--run_id", "nightly"]
    with RunLease(out, "nightly", "the-first-launch"):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "run id nightly is being run by another launcher" in err and "the-first-launch" in err
        # The refused launch wrote nothing: no attempt folder beside the first launch's lease.
        assert os.listdir(run_meta_dir(out, "nightly")) == ["_LEASE.json"]
    assert not os.path.exists(lease_path(out, "nightly"))
    assert main(args) == 0
    assert finished_runs(out) == ["nightly"]


def test_an_expired_lease_is_taken_over(tmp_path, tiny_checkpoint, caplog):
    audio = tmp_path / "audio"
    write_good(str(audio))
    out = str(tmp_path / "out")
    os.makedirs(run_meta_dir(out, "nightly"))
    # Written six minutes ago by the store's clock (a local disk's is this machine's): past the
    # default five. Its expires_at says it is still valid: the writer's clock is not believed.
    later = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).isoformat()
    with open(lease_path(out, "nightly"), "w") as f:
        json.dump({"run_id": "nightly", "token": "dead", "holder": "a-launcher-that-died",
                   "host": "another-machine", "pid": 1, "seconds": 300, "expires_at": later}, f)
    six_minutes_ago = time.time() - 360
    os.utime(lease_path(out, "nightly"), (six_minutes_ago, six_minutes_ago))
    assert main(["--input", str(audio), "--output", out, "--model", tiny_checkpoint, "--run_id", "nightly"]) == 0
    assert "taking over an expired lease" in caplog.text and "a-launcher-that-died" in caplog.text
    assert finished_runs(out) == ["nightly"]
    assert not os.path.exists(lease_path(out, "nightly"))


def test_two_launchers_racing_on_a_local_disk_one_wins(tmp_path):
    out = str(tmp_path / "out")
    won, refused = _race(lambda name: RunLease(out, "r", name))
    assert len(won) == 1 and len(refused) == 1, (won, refused)
    won[0].release()
    assert not os.path.exists(lease_path(out, "r"))


def test_leases_on_object_storage(s3_server):
    out = f"s3://{s3_server.bucket}/lease-{uuid.uuid4().hex[:8]}"
    options = s3_server.storage_options()
    won, refused = _race(lambda name: RunLease(out, "r", name, options, settle_seconds=1.0))
    assert len(won) == 1 and len(refused) == 1, (won, refused)
    with pytest.raises(LeaseHeldError, match="being run by another launcher"):
        RunLease(out, "r", "late", options, settle_seconds=0.2).acquire()
    won[0].check()
    won[0].release()
    assert not s3_server.filesystem().exists(lease_path(out, "r").removeprefix("s3://"))
    with RunLease(out, "r", "next", options, settle_seconds=0.2) as lease:
        lease.check()


def test_a_lease_renews_itself_and_notices_when_it_was_taken(tmp_path):
    out = str(tmp_path / "out")
    lease = RunLease(out, "r", "me", seconds=0.6).acquire()
    try:
        with open(lease_path(out, "r")) as f:
            first = json.load(f)["expires_at"]
        threading.Event().wait(0.5)   # past one renewal (every seconds / 3), before expiry
        with open(lease_path(out, "r")) as f:
            assert json.load(f)["expires_at"] > first
        with open(lease_path(out, "r"), "w") as f:
            json.dump({"token": "someone-else", "holder": "other", "expires_at": "2999-01-01T00:00:00+00:00"}, f)
        with pytest.raises(LeaseHeldError, match="lost its lease"):
            lease.check()
    finally:
        lease.release()
    # Not ours any more: release leaves the other holder's lease alone.
    assert json.load(open(lease_path(out, "r")))["token"] == "someone-else"


def _write_lease(fs, path, **fields):
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, json.dumps({"run_id": "r", "token": "theirs", "holder": "their-attempt", **fields}).encode())


def _where(where, s3_server, tmp_path):
    if where == "local":
        import fsspec
        return str(tmp_path / "out"), None, fsspec.filesystem("file")
    return (f"s3://{s3_server.bucket}/lease-{uuid.uuid4().hex[:8]}", s3_server.storage_options(),
            s3_server.filesystem())


@pytest.mark.parametrize("where", ["local", "s3"])
def test_expiry_is_judged_by_the_stores_clock(where, s3_server, tmp_path):
    """A lease its holder just wrote is live whatever the holder's clock said: one whose clock runs
    five minutes behind writes an expires_at already past (the old rule took such a lease over)."""
    out, options, fs = _where(where, s3_server, tmp_path)
    behind = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)).isoformat()
    _write_lease(fs, lease_path(out, "r").removeprefix("s3://"), host="elsewhere", pid=1, seconds=300,
                 expires_at=behind)
    with pytest.raises(LeaseHeldError, match="being run by another launcher"):
        RunLease(out, "r", "me", options, settle_seconds=0.2).acquire()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_holder_in_another_pid_namespace_is_never_judged_gone(where, s3_server, tmp_path):
    """Containers sharing a host name: a pid that is free here says nothing about another pid
    namespace's launcher; only expiry frees its lease. In this namespace the same dead pid does."""
    from pipeline.runs.lease import process_identity

    out, options, fs = _where(where, s3_server, tmp_path)
    me = process_identity()
    dead = {**me, "pid": 2 ** 22 + 12345, "process_start": "1"}   # above pid_max: never running
    _write_lease(fs, lease_path(out, "r").removeprefix("s3://"), **{**dead, "pid_namespace": "pid:[1]"}, seconds=300)
    with pytest.raises(LeaseHeldError, match="being run by another launcher"):
        RunLease(out, "r", "me", options, settle_seconds=0.2).acquire()
    _write_lease(fs, lease_path(out, "r").removeprefix("s3://"), **dead, seconds=300)
    lease = RunLease(out, "r", "me", options, settle_seconds=0.2).acquire()
    lease.check()
    lease.release()


def test_a_lost_lease_stays_lost(tmp_path):
    """RunLease.lost (set by the renewer when it found the lease taken) is honoured by check,
    even when the lease file reads as ours again."""
    out = str(tmp_path / "out")
    lease = RunLease(out, "r", "me").acquire()
    try:
        lease.check()
        lease.lost = True
        with pytest.raises(LeaseHeldError, match="lost its lease"):
            lease.check()
    finally:
        lease.release()


def test_a_lease_not_renewed_in_time_fails_its_check(tmp_path):
    """Less than a third of the lease left by the store's clock: another launcher may take it over
    any moment, so its holder must not start a destructive step."""
    out = str(tmp_path / "out")
    lease = RunLease(out, "r", "me", seconds=300).acquire()
    try:
        old = time.time() - 250
        os.utime(lease_path(out, "r"), (old, old))
        with pytest.raises(LeaseHeldError, match="last renewed"):
            lease.check()
    finally:
        lease.release()


def test_a_lease_whose_renewal_failed_once_is_still_held(tmp_path, caplog):
    """One renewal refused by the disk (a real fault: the process may write no file larger than a
    few bytes, as on a full disk, for one tick of the renewer) is a hiccup: the next renewal,
    later than the publication steps' margin allows, still renews the lease, which stays held
    and whole (the refused write never truncated it)."""
    import resource

    out = str(tmp_path / "out")
    # Seconds long enough that a busy machine's scheduling (CI) cannot shift a tick out of its window.
    lease = RunLease(out, "r", "me", seconds=6).acquire()   # renewed every 2 s
    try:
        # Its write dated a second earlier, so the renewal after the failed one comes clearly
        # past the margin (5 s of 6 gone, against a margin of 2), not just at it.
        old = os.stat(lease_path(out, "r")).st_mtime - 1.0
        os.utime(lease_path(out, "r"), (old, old))
        limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16, limits[1]))   # SIGXFSZ is ignored: writes fail
        try:
            time.sleep(3.0)   # the first renewal (at 2 s) fails
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        assert "renewing the lease failed" in caplog.text
        with open(lease_path(out, "r")) as f:
            assert json.load(f)["token"] == lease.token   # not truncated by the refused write
        time.sleep(2.0)   # the second renewal (at 4 s), with less than a third of the lease left before it
        assert not lease.lost
        lease.check()   # renewed: a publication step may proceed
        assert sorted(os.listdir(os.path.dirname(lease_path(out, "r")))) == ["_LEASE.json"]
    finally:
        lease.release()
