"""The cause behind Ray Train's TrainingFailedError, as the one line `genimg train` prints (no cluster:
Ray Train's own exception types, as `trainer.fit()` raises them)."""

from ray.train import ControllerError, WorkerGroupError

from genimg.distributed.failures import training_error
from genimg.errors import DataError
from genimg.store import ChecksumMismatch


def test_a_workers_genimg_error_comes_up_as_it_is_before_the_other_ranks_collateral_errors():
    corrupt = ChecksumMismatch("file:///s/datasets/d/v1/train/part-00001.parquet: checksum mismatch (object corrupt)")
    error = WorkerGroupError("Traceback …", {0: RuntimeError("Connection closed by peer"), 1: corrupt})
    assert training_error(error) is corrupt
    stopped = DataError("d@v1: shard train/part-00000.parquet holds 3 records, its manifest says 4")
    assert training_error(ControllerError(stopped)) is stopped


def test_any_other_worker_error_names_its_rank_type_and_first_line():
    error = WorkerGroupError("Traceback …", {1: RuntimeError("CUDA error: out of memory\nmore"), 2: ValueError("x")})
    assert str(training_error(error)) == "training failed on rank 1: RuntimeError: CUDA error: out of memory"
    assert str(training_error(RuntimeError(""))) == "training failed: RuntimeError: no message"
