import os

import pytest

from tests.conftest import S3_CREDENTIALS


@pytest.fixture(scope="module")
def ray_cluster(moto_endpoint):
    """A real 2-node Ray cluster on this machine (head + one node, 1 CPU each).

    The S3 test credentials and moto's endpoint are in the environment before the nodes start,
    so Ray's workers and controller see them as a real cluster's nodes would see theirs.
    """
    import ray
    from ray.cluster_utils import Cluster

    saved = dict(os.environ)
    os.environ.update(S3_CREDENTIALS)
    os.environ["AWS_ENDPOINT_URL_S3"] = moto_endpoint
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = "20"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        os.environ.clear()
        os.environ.update(saved)


def kill_process_tree(root_pid: int) -> None:
    """What losing a machine does to one Ray node: its raylet and every process it started (the
    workers, with their training processes) die at once, with no chance to say goodbye. Killing
    the raylet alone lets its workers run on for a while as orphans, so a short run could finish
    before Ray noticed anything."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=10)


def lose_node(cluster, node) -> None:
    """Kill a `ray.cluster_utils.Cluster` node the way a lost machine goes, then drop it from the cluster."""
    from ray._private import ray_constants

    raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process
    kill_process_tree(raylet.pid)
    cluster.remove_node(node, allow_graceful=False)
