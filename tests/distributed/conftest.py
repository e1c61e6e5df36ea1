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
