"""The benchmark's rounds: floors and stagecopy paths measured side by side, every result checked.

One round, in this order, each step timed alone after a CHECKPOINT on both clusters:

1. F2 and Fpk floors (psql | psql);
2. (a) initial load into an empty target (merge);
3. 1% of the source rows updated; (b) full re-copy (merge, no watermark);
4. another 1% updated; (c) incremental run (`incremental_field: updated_at`) with the check
   that runs with it (`check_scope: window`);
5. 1% of the source keys deleted; (d') the full merge, then (d) the same run in mode sync;
6. (e) the integrity check alone (`runner.verify`, as `stagecopy check` runs it) over all rows;
7. deleted rows put back (untimed), VACUUM ANALYZE the source.

Every stagecopy run happens in a child process (`bench.copy_once`) that reports its own peak
RSS. Every result is compared with the source (count + sum of row hashes); a mismatch stops the
benchmark with an error. The source digest is kept up to date by booking each change (the
digest of a 1% slice before and after), and checked in full at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench import dataset as ds
from bench.clusters import BenchClusters
from bench.floors import copy_in_sql, copy_out_sql, psql_pipe
from bench.report import Sample
from stagecopy_dagster.identifiers import QualifiedName, clip_identifier

REPO = Path(__file__).resolve().parents[1]
TARGET_TABLE = ds.SOURCE_TABLE  # the target keeps the source's name, as a spec without target does
FLOOR_STAGING = QualifiedName("bench_floor", "staging")
FLOOR_PK = QualifiedName("bench_floor", "items_pk")


class BenchFailure(RuntimeError):
    """A path produced a wrong result, or a step failed: the numbers cannot be published."""


def log(message: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Runner:
    """Holds the clusters, the source's current digest and the samples taken so far."""

    def __init__(
        self,
        clusters: BenchClusters,
        rows: int,
        *,
        write_block: int | None = None,
        shape: ds.Shape = ds.NARROW,
    ) -> None:
        self.cl = clusters
        self.rows = rows
        self.shape = shape
        self.psql = clusters.psql()
        self.samples: list[Sample] = []
        self.source_digest = ds.Digest(0, 0)
        self._worker: subprocess.Popen[str] | None = None
        self.write_block = write_block

    # -- plumbing ------------------------------------------------------------------------------

    def on_source(self, fn: Callable[[psycopg.Connection], Any]) -> Any:
        """Run `fn` on an autocommit superuser connection to the source."""
        with psycopg.connect(self.cl.source.url, autocommit=True) as conn:
            return fn(conn)

    def on_target(self, fn: Callable[[psycopg.Connection], Any]) -> Any:
        """Run `fn` on an autocommit superuser connection to the target."""
        with psycopg.connect(self.cl.target.url, autocommit=True) as conn:
            return fn(conn)

    def checkpoint(self) -> None:
        """Flush both clusters so no step pays for the previous one's dirty pages."""
        with ThreadPoolExecutor(max_workers=2) as pool:
            for f in [
                pool.submit(self.on_source, lambda c: c.execute("CHECKPOINT")),
                pool.submit(self.on_target, lambda c: c.execute("CHECKPOINT")),
            ]:
                f.result()

    def target_digest(self, table: QualifiedName) -> ds.Digest:
        return self.on_target(lambda c: ds.table_digest(c, table, shape=self.shape))

    def verify(self, key: str, table: QualifiedName, expected: ds.Digest) -> None:
        got = self.target_digest(table)
        if got != expected:
            raise BenchFailure(
                f"{key}: WRONG RESULT: target {table} has {got}; expected {expected}"
            )

    def verify_during(
        self, key: str, table: QualifiedName, expected: ds.Digest, other: Callable[[], Any]
    ) -> Any:
        """Verify `table` on the target while `other` runs (a change on the source); its result.

        The two touch different clusters, and neither is timed.
        """
        with ThreadPoolExecutor(max_workers=1) as pool:
            checked = pool.submit(self.verify, key, table, expected)
            result = other()
            checked.result()
        return result

    def target_count(self, table: QualifiedName) -> int:
        return self.on_target(
            lambda c: ds.table_digest(c, table, count_only=True, shape=self.shape).rows
        )

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            BENCH_SOURCE_URL=self.cl.source.url,
            BENCH_TARGET_URL=self.cl.target.url,
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        )
        return env

    def copier(
        self,
        *,
        source: QualifiedName = ds.SOURCE_TABLE,
        target: QualifiedName = TARGET_TABLE,
        mode: str = "merge",
        incremental: bool = False,
        check_only: bool = False,
        parallel: int = 1,
        diff: bool = True,
        verify: bool = False,
    ) -> dict[str, Any]:
        """One job for the `bench.copy_once --serve` worker; its JSON report."""
        job = {
            "diff": diff,
            "verify": verify,
            "source": f"{source.schema}.{source.name}",
            "target": f"{target.schema}.{target.name}",
            "mode": mode,
            "incremental": incremental,
            "check_only": check_only,
            "parallel": parallel,
            "write_block": self.write_block,
        }
        if self._worker is None or self._worker.poll() is not None:
            self._worker = subprocess.Popen(
                [sys.executable, "-m", "bench.copy_once", "--serve"],
                env=self._child_env(),
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        assert self._worker.stdin is not None and self._worker.stdout is not None
        self._worker.stdin.write(json.dumps(job) + "\n")
        self._worker.stdin.flush()
        line = self._worker.stdout.readline()
        if not line:
            raise BenchFailure(f"the copy worker died on {job}")
        report = json.loads(line)
        if "error" in report:
            raise BenchFailure(f"{job}: {report['error']}")
        return report

    def copier_process(self, *, source: QualifiedName, target: QualifiedName) -> dict[str, Any]:
        """One initial load in a fresh `python -m bench.copy_once` process (imports included)."""
        args = [
            sys.executable, "-m", "bench.copy_once",
            "--source", f"{source.schema}.{source.name}",
            "--target", f"{target.schema}.{target.name}",
            "--mode", "merge",
        ]  # fmt: skip
        if self.write_block:
            args += ["--write-block", str(self.write_block)]
        proc = subprocess.run(
            args, env=self._child_env(), capture_output=True, text=True, cwd=REPO, check=False
        )
        if proc.returncode != 0:
            raise BenchFailure(f"copy_once failed:\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def close(self) -> None:
        """End the worker."""
        if self._worker is not None:
            assert self._worker.stdin is not None
            self._worker.stdin.close()
            self._worker.wait(timeout=60)
            self._worker = None

    def record(self, key: str, run: int, report: dict[str, Any]) -> Sample:
        sample = Sample(
            key=key,
            run=run,
            seconds=float(report["seconds"]),
            rows=int(report["rows"]),
            maxrss_kb=report.get("vmhwm_kb"),
            detail={k: v for k, v in report.items() if k not in ("seconds", "rows", "vmhwm_kb")},
        )
        self.samples.append(sample)
        steps = report.get("steps")
        shown = " ".join(f"{k}={v:.2f}" for k, v in steps.items() if v >= 0.05) if steps else ""
        rss = f", peak RSS {sample.maxrss_kb / 1024:.0f} MB" if sample.maxrss_kb else ""
        cpu = f", client CPU {report['cpu_seconds']:.1f} s" if "cpu_seconds" in report else ""
        log(f"  {key:<8} {sample.seconds:7.2f} s  {sample.rows} rows{cpu}{rss}  {shown}")
        return sample

    @staticmethod
    def expect(key: str, what: str, got: Any, want: Any) -> None:
        if got != want:
            raise BenchFailure(f"{key}: {what} is {got}, expected {want}")

    # -- source changes, booked into the digest ------------------------------------------------

    def setup_source(self) -> None:
        started = time.perf_counter()
        self.on_source(lambda c: ds.create_source(c, ds.SOURCE_TABLE, self.rows, shape=self.shape))
        heap, total = self.on_source(lambda c: ds.relation_size(c, ds.SOURCE_TABLE))
        self.source_digest = self.on_source(
            lambda c: ds.table_digest(c, ds.SOURCE_TABLE, shape=self.shape)
        )
        log(
            f"source ({self.shape.name}): {self.rows} rows, heap {heap / 1e6:.0f} MB, with indexes "
            f"{total / 1e6:.0f} MB, made in {time.perf_counter() - started:.0f} s"
        )
        self.on_target(
            lambda c: c.execute(
                "CREATE SCHEMA IF NOT EXISTS bench; CREATE SCHEMA IF NOT EXISTS bench_floor"
            )
        )

    def update_slice(self, slice_no: int) -> int:
        def change(conn: psycopg.Connection) -> int:
            before = ds.table_digest(conn, ds.SOURCE_TABLE, slice_no=slice_no, shape=self.shape)
            changed = ds.update_slice(conn, ds.SOURCE_TABLE, slice_no)
            after = ds.table_digest(conn, ds.SOURCE_TABLE, slice_no=slice_no, shape=self.shape)
            self.source_digest = self.source_digest - before + after
            return changed

        return self.on_source(change)

    def delete_slice(self, slice_no: int) -> tuple[int, ds.Digest]:
        def change(conn: psycopg.Connection) -> tuple[int, ds.Digest]:
            before = ds.table_digest(conn, ds.SOURCE_TABLE, slice_no=slice_no, shape=self.shape)
            deleted = ds.delete_slice(conn, ds.SOURCE_TABLE, slice_no)
            self.source_digest = self.source_digest - before
            return deleted, before

        return self.on_source(change)

    def restore_deleted(self, removed: ds.Digest) -> None:
        def change(conn: psycopg.Connection) -> None:
            ds.restore_deleted(conn, ds.SOURCE_TABLE)
            self.source_digest = self.source_digest + removed
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(ds.SOURCE_TABLE.identifier))

        self.on_source(change)

    def check_source_digest(self) -> None:
        full = self.on_source(lambda c: ds.table_digest(c, ds.SOURCE_TABLE, shape=self.shape))
        if full != self.source_digest:
            raise BenchFailure(f"bookkeeping: source is {full}, booked {self.source_digest}")

    # -- the round -------------------------------------------------------------------------------

    def floor(
        self, key: str, run: int, table: QualifiedName, *, primary_key: bool, verify: bool
    ) -> None:
        unlogged = not primary_key

        def recreate(conn: psycopg.Connection) -> None:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table.identifier))
            conn.execute(
                ds.create_table_sql(
                    table, primary_key=primary_key, unlogged=unlogged, shape=self.shape
                )
            )

        self.on_target(recreate)
        self.checkpoint()
        seconds, cpu = psql_pipe(
            self.psql,
            self.cl.source,
            self.cl.target,
            copy_out_sql(ds.SOURCE_TABLE, self.shape),
            copy_in_sql(table, self.shape),
        )
        if verify:
            self.verify(key, table, self.source_digest)
        else:
            self.expect(key, "row count", self.target_count(table), self.source_digest.rows)
        self.record(
            key, run, {"seconds": seconds, "rows": self.source_digest.rows, "cpu_seconds": cpu}
        )
        self.on_target(lambda c: c.execute(sql.SQL("DROP TABLE {}").format(table.identifier)))

    def round(self, run: int) -> None:
        # Distinct 1% slices: updates from 0..49, deletes from 50..99.
        updates = ((3 * run) % 50, (3 * run + 1) % 50, (3 * run + 2) % 50)
        gone = 50 + run % 50
        n = self.source_digest.rows

        self.floor("F2", run, FLOOR_STAGING, primary_key=False, verify=run == 0)
        self.floor("Fpk", run, FLOOR_PK, primary_key=True, verify=run == 0)
        self._initial_load(run, n)
        changed = self._recopies(run, n, updates)
        self._incremental(run, changed)
        deleted, removed = self._deletes(run, gone)
        self._integrity(run, target_rows=n - deleted)
        self.restore_deleted(removed)
        self._parallel_load(run, n)

    def _drop_target(self) -> None:
        self.on_target(
            lambda c: c.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(TARGET_TABLE.identifier))
        )

    def _initial_load(self, run: int, n: int) -> None:
        """(a) initial load: the target table does not exist."""
        self._drop_target()
        self.checkpoint()
        a = self.record("a", run, self.copier(mode="merge"))
        self.expect("a", "path", a.detail["path"], "direct")
        self.expect("a", "rows copied", a.rows, n)

    def _recopies(self, run: int, n: int, updates: tuple[int, int, int]) -> int:
        """(b) and (b_all): full re-copies after 1% of the rows changed; rows changed after."""
        first, second, third = updates
        changed = self.verify_during(
            "a", TARGET_TABLE, self.source_digest, lambda: self.update_slice(first)
        )
        self.checkpoint()
        # The default: keys and row hashes compared first, only the changed rows copied.
        b = self.record("b", run, self.copier(mode="merge"))
        self.expect("b", "path", b.detail["path"], "diff")
        self.expect("b", "(compared, copied)", (b.rows, b.detail["rows_copied"]), (n, changed))
        self.expect(
            "b", "(inserted, updated)", (b.detail["inserted"], b.detail["updated"]), (0, changed)
        )
        changed = self.verify_during(
            "b", TARGET_TABLE, self.source_digest, lambda: self.update_slice(second)
        )
        # (b_all) the same with `diff: false`: every row through staging into MERGE.
        self.checkpoint()
        b_all = self.record("b_all", run, self.copier(mode="merge", diff=False))
        self.expect("b_all", "path", b_all.detail["path"], "staged")
        self.expect("b_all", "rows copied", b_all.rows, n)
        self.expect(
            "b_all",
            "(inserted, updated)",
            (b_all.detail["inserted"], b_all.detail["updated"]),
            (0, changed),
        )
        return self.verify_during(
            "b_all", TARGET_TABLE, self.source_digest, lambda: self.update_slice(third)
        )

    def _incremental(self, run: int, changed: int) -> None:
        """(c) incremental: with the index an incremental first run creates, 1% more changed."""
        index = clip_identifier(f"{TARGET_TABLE.name}_updated_at_idx")
        self.on_target(
            lambda c: c.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (updated_at)").format(
                    sql.Identifier(index), TARGET_TABLE.identifier
                )
            )
        )
        self.checkpoint()
        # With the check that runs with it, as the asset runs them: the window it copied.
        c = self.record("c", run, self.copier(mode="merge", incremental=True, verify=True))
        # The watermark is inclusive: the newest row of the previous change is read again.
        if not changed <= c.rows <= changed + 1:
            raise BenchFailure(f"c: copied {c.rows} rows for {changed} changed")
        self.expect("c", "updated", c.detail["updated"], changed)
        self.expect("c", "check", (c.detail["passed"], c.detail["check_scope"]), (True, "window"))
        self.expect("c", "rows checked", c.detail["window_rows"], c.rows)

    def _deletes(self, run: int, gone: int) -> tuple[int, ds.Digest]:
        """(d') merge and (d) sync, from the same state: 1% of the keys deleted at the source."""
        before_delete = self.source_digest
        deleted, removed = self.verify_during(
            "c", TARGET_TABLE, before_delete, lambda: self.delete_slice(gone)
        )
        self.checkpoint()
        dm = self.record("d_merge", run, self.copier(mode="merge"))
        counts = (dm.detail["inserted"], dm.detail["updated"], dm.detail["deleted"])
        self.expect("d_merge", "(inserted, updated, deleted)", counts, (0, 0, 0))
        self.verify("d_merge", TARGET_TABLE, before_delete)  # merge keeps the deleted keys
        self.checkpoint()
        d = self.record("d", run, self.copier(mode="sync"))
        self.expect("d", "deleted", d.detail["deleted"], deleted)
        self.verify("d", TARGET_TABLE, self.source_digest)
        return deleted, removed

    def _integrity(self, run: int, *, target_rows: int) -> None:
        """(e) the integrity check over all rows, as the asset check runs it."""
        self.checkpoint()
        e = self.record("e", run, self.copier(mode="sync", check_only=True))
        if not e.detail["passed"] or e.detail["target_rows"] != target_rows:
            raise BenchFailure(f"e: integrity check did not pass cleanly: {e.detail}")

    def _parallel_load(self, run: int, n: int) -> None:
        """(g) the initial load again, split into two COPY streams over one exported snapshot."""
        self._drop_target()
        self.checkpoint()
        g = self.record("g", run, self.copier(mode="merge", parallel=2))
        self.expect("g", "rows copied", g.rows, n)
        self.verify("g", TARGET_TABLE, self.source_digest)

    # -- memory ----------------------------------------------------------------------------------

    def memory_run(self, rows: int) -> dict[str, Any]:
        """Initial load of `rows` rows by a fresh copier process; its report (peak RSS)."""
        table = QualifiedName(ds.SCHEMA, f"items_{rows}")
        made = rows != self.rows
        if made:
            log(f"memory: making a {rows}-row source table")
            self.on_source(lambda c: ds.create_source(c, table, rows, shape=self.shape))
        source = table if made else ds.SOURCE_TABLE
        digest = self.on_source(lambda c: ds.table_digest(c, source, shape=self.shape))
        self.on_target(
            lambda c: c.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table.identifier))
        )
        self.checkpoint()
        report = self.copier_process(source=source, target=table)
        self.verify(f"memory {rows}", table, digest)
        peak, imports = report["vmhwm_kb"] / 1024, report["baseline_rss_kb"] / 1024
        log(
            f"  memory   {report['seconds']:7.2f} s  {rows} rows, "
            f"peak RSS {peak:.0f} MB (after imports {imports:.0f} MB)"
        )
        self.on_target(lambda c: c.execute(sql.SQL("DROP TABLE {}").format(table.identifier)))
        if made:
            self.on_source(lambda c: c.execute(sql.SQL("DROP TABLE {}").format(table.identifier)))
        return report
