import json
import os
import signal
import subprocess
import sys
import time

import pytest

from latprof.tables import io as tbl
from latprof.errors import LatprofError
from latprof.spec import KEY_FIELDS
from latprof.tables.store import TableStore
from test_io import META, SPECS, make_rows


def rows(specs, session="s"):
    return make_rows(specs, session=session).to_dict("records")


def test_rows_survive_a_crash_before_compaction(tmp_path):
    path = tmp_path / "t.parquet"
    store = TableStore(path, META).__enter__()
    for r in rows(SPECS[:2]):
        store.append(r)
    # simulate kill -9: no __exit__; the dead process's lock and files are gone, the journal stays
    store._journal_f.close()
    os.close(store._lock.fd)
    assert not path.exists() or len(tbl.read(path).df) == 0
    assert len(open(store.journal).readlines()) == 2
    with TableStore(path, META) as again:
        assert again.has(SPECS[0]) and again.has(SPECS[1]) and not again.has(SPECS[2])
    assert len(tbl.read(path).df) == 2
    assert not store.journal.exists()


def test_a_half_written_journal_line_is_ignored(tmp_path):
    path = tmp_path / "t.parquet"
    journal = path.with_name(path.name + ".journal.jsonl")
    good = json.dumps(rows(SPECS[:1])[0])
    journal.write_text(good + "\n" + good[: len(good) // 2])
    with TableStore(path, META) as store:
        assert store.has(SPECS[0])
    assert len(tbl.read(path).df) == 1


def test_second_writer_is_refused(tmp_path):
    path = tmp_path / "t.parquet"
    with TableStore(path, META):
        with pytest.raises(LatprofError, match="another latprof process"):
            TableStore(path, META).__enter__()


def test_other_device_refused(tmp_path):
    path = tmp_path / "t.parquet"
    with TableStore(path, META) as s:
        s.append(rows(SPECS[:1])[0])
    other = {**META, "device": {"kind": "cuda", "name": "Other GPU", "slug": "othergpu"}}
    with pytest.raises(LatprofError, match="Other GPU"):
        TableStore(path, other).__enter__()


def test_first_reference_baseline_is_kept(tmp_path):
    path = tmp_path / "t.parquet"
    with TableStore(path, {**META, "reference": None}) as s:
        s.set_reference("ref", 500.0)
        s.append(rows(SPECS[:1])[0])
    with TableStore(path, {**META, "reference": None}) as s:
        s.set_reference("ref", 900.0)
        assert s.reference_baseline == 500.0


SWEEP = [sys.executable, "-m", "latprof", "sweep", "--cin", "8", "--cout", "1-60", "--hw", "12", "--quick",
         "--no-progress", "--out"]


@pytest.mark.slow
def test_kill_9_mid_sweep_then_resume_loses_nothing_and_repeats_nothing(tmp_path):
    path = tmp_path / "t.parquet"
    journal = path.with_name(path.name + ".journal.jsonl")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(SWEEP + [str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= 8:
            break
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {tuple(r[k] for k in KEY_FIELDS): r for r in map(json.loads, journal.read_text().splitlines()
                                                              if journal.exists() else [])}
    if path.exists():  # rows compacted before the kill count as measured too
        for r in tbl.read(path).df.to_dict("records"):
            before[tuple(r[k] for k in KEY_FIELDS)] = r
    assert 8 <= len(before) < 60

    done = subprocess.run(SWEEP + [str(path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{60 - len(before)} measured now, {len(before)} already measured" in done.stdout
    df = tbl.read(path).df
    assert len(df) == 60 and not df.duplicated(list(KEY_FIELDS)).any()
    keyed = {tuple(r[k] for k in KEY_FIELDS): r for r in df.to_dict("records")}
    for key, old in before.items():  # not re-measured: same session, same numbers
        assert keyed[key]["session"] == old["session"]
        assert keyed[key]["latency_us_p50"] == pytest.approx(old["latency_us_p50"])
    assert len({r["session"] for r in keyed.values()}) == 2
