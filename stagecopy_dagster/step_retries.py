"""Transient failures as Dagster step retries, so the UI shows every attempt.

Inside a Dagster run a table's op makes one attempt per step attempt (no retry loop inside the
op). What it raises decides what Dagster does next:

- a transient failure (connection lost, deadlock, serialization failure) with attempts left:
  `dg.RetryRequested`, waiting as the op's `dg.RetryPolicy` says (exponential backoff from
  `retries.delay`, with jitter). Dagster records STEP_UP_FOR_RETRY and STEP_RESTARTED and runs
  the step again; the UI shows each attempt.
- anything else, or a transient failure on the last attempt: `dg.Failure(allow_retries=False)`
  with the one-line reason, so no policy retries it.

Attempts: the table's `retries.attempts` in the spec, else the target resource's `retries`
(default 3). Each attempt is one whole copy in one target transaction: a failed attempt leaves
the target as it was.
"""

from __future__ import annotations

from typing import NoReturn

import dagster as dg
import psycopg

from stagecopy_dagster.connection import Database
from stagecopy_dagster.errors import StagecopyError, describe_db_error, is_transient
from stagecopy_dagster.spec import TableSpec

#: Attempts (in all) when neither the spec nor the resource says: the resource's default.
DEFAULT_ATTEMPTS = 3
#: Seconds before the first retry when the spec does not say.
DEFAULT_DELAY = 1.0


def retry_policy(table: TableSpec) -> dg.RetryPolicy:
    """The op's retry policy: `retries.attempts` (default 3) with exponential backoff and jitter.

    Example:
        >>> retry_policy(table).max_retries  # doctest: +SKIP
        2
    """
    spec = table.retries
    attempts = spec.attempts if spec is not None and spec.attempts is not None else None
    return dg.RetryPolicy(
        max_retries=(attempts or DEFAULT_ATTEMPTS) - 1,
        delay=spec.delay_seconds if spec is not None else DEFAULT_DELAY,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


def attempts_for(table: TableSpec, target: Database) -> int:
    """Attempts in all for `table`: the spec's `retries.attempts`, else the target's `retries`."""
    if table.retries is not None and table.retries.attempts is not None:
        return table.retries.attempts
    return max(1, target.retries)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error):
        return describe_db_error(exc)
    return str(exc) or type(exc).__name__


def fail_or_retry(
    context: dg.AssetExecutionContext | dg.OpExecutionContext,
    table: TableSpec,
    exc: BaseException,
    *,
    attempts: int,
) -> NoReturn:
    """Raise what tells Dagster to retry `exc` (transient, attempts left) or to fail at once.

    `context.retry_number` is 0 on the first attempt. Errors that are neither stagecopy's nor
    psycopg's (a bug) fail without a retry; their traceback stays attached as the cause.
    """
    attempt = context.retry_number + 1
    reason = _reason(exc)
    if not isinstance(exc, StagecopyError | psycopg.Error):
        raise dg.Failure(
            description=f"{table.label}: {type(exc).__name__}: {reason}",
            metadata={"table": table.label, "attempt": attempt},
            allow_retries=False,
        ) from exc
    if isinstance(exc, psycopg.Error) and not isinstance(exc, StagecopyError):
        reason = f"{table.label}: {reason}"
    if is_transient(exc) and attempt < attempts:
        wait = float(retry_policy(table).calculate_delay(attempt))
        context.log.warning(
            f"{reason} (attempt {attempt} of {attempts}; Dagster retries the step in {wait:.1f} s)"
        )
        raise dg.RetryRequested(max_retries=attempts - 1, seconds_to_wait=wait) from exc
    suffix = f" (attempt {attempt} of {attempts})" if is_transient(exc) and attempts > 1 else ""
    raise dg.Failure(
        description=reason + suffix,
        metadata={"table": table.label, "attempt": attempt, "transient": is_transient(exc)},
        allow_retries=False,
    ) from None
