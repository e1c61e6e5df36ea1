"""Worker errors that a restart cannot fix, and the cause behind Ray Train's TrainingFailedError.

Ray Train (V2) restarts the worker group after any worker error, up to
`FailureConfig(max_failures)`, and its FailureConfig cannot exempt an error type. A corrupt or
malformed shard is deterministic: every restart reads the same bytes and fails the same way. A
`UserCallback` sees the workers' errors on the controller; an error raised there is a controller
error, which Ray's failure policy does not retry, so the run stops at once (its worker group is
shut down, ranks waiting in a collective included).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from genimg.errors import DataError, GenimgError
from genimg.store import ChecksumMismatch

if TYPE_CHECKING:
    from ray.train import UserCallback
    from ray.train.v2._internal.execution.context import TrainRunContext

NOT_RETRIED: tuple[type[Exception], ...] = (DataError, ChecksumMismatch)


def stop_on_data_error() -> UserCallback:
    """A Ray Train callback that ends the run, without a restart, when a worker's data cannot be
    read. Built when asked for, so that importing this module does not import Ray."""
    from ray.train import UserCallback

    class StopOnDataError(UserCallback):
        def after_exception(self, run_context: TrainRunContext, worker_exceptions: dict[int, Exception]) -> None:
            for rank in sorted(worker_exceptions):
                if isinstance(worker_exceptions[rank], NOT_RETRIED):
                    raise worker_exceptions[rank]

    return StopOnDataError()


def failure_cause(error: BaseException) -> tuple[int | None, BaseException]:
    """(rank or None, exception) behind a failed `trainer.fit()`: a worker's genimg error first
    (the other ranks often fail only because one stopped), else the lowest rank's error, else the
    controller's; `error` itself when it wraps nothing."""
    failures: dict[int, BaseException] = dict(getattr(error, "worker_failures", None) or {})
    controller = getattr(error, "controller_failure", None)
    ranked = sorted(failures.items())
    for rank, failure in ranked:
        if isinstance(failure, GenimgError):
            return rank, failure
    if isinstance(controller, BaseException):  # StopOnDataError's stop: the worker's own error
        return None, controller
    return ranked[0] if ranked else (None, error)


def training_error(error: BaseException) -> GenimgError:
    """One line for a failed `trainer.fit()`: a worker's genimg error as it is (it names the shard,
    key or value at fault, as it would in process), else the first line of the cause."""
    rank, cause = failure_cause(error)
    if isinstance(cause, GenimgError):
        return cause
    text = str(cause).strip()
    where = f" on rank {rank}" if rank is not None else ""
    return GenimgError(
        f"training failed{where}: {type(cause).__name__}: {text.splitlines()[0] if text else 'no message'}"
    )


__all__ = ["NOT_RETRIED", "failure_cause", "stop_on_data_error", "training_error"]
