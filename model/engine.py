"""Ray for the data stages: join a cluster, run a stage's pure function over many items on it.

``ambient ingest --ray ADDRESS`` and ``ambient units --ray ADDRESS`` spread their work with
``map_on_cluster``: one Ray task per item (a video, a chunk of the pool), each retried by Ray when
its worker or node dies. The function is the same one the single-process path runs, and results
are collected by item, so an item is never counted twice or lost. Every node needs the same
Ambient installed and the data folders on shared storage (the same paths everywhere).

Entry points: ``connect`` (or the ``on_cluster`` context), ``map_on_cluster``, ``cluster_summary``.
"""
from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

CONNECT_TIMEOUT_S = 25.0     # the bound is 30 s; ray.init itself retries without end
TASK_RETRIES = 5             # a task whose worker process or node died runs again, elsewhere if need be
IN_FLIGHT_PER_CPU = 4        # pending tasks per cluster CPU: back-pressure, so 360,000 videos are not all queued at once


class ClusterError(RuntimeError):
    """The Ray cluster named by the user cannot be reached."""


def _bootstrap_address(address: str) -> str:
    """host:port of the cluster's GCS ("auto": RAY_ADDRESS, else the cluster started on this machine)."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        resolved = canonicalize_bootstrap_address(address)
    except Exception as error:   # noqa: BLE001 - Ray raises several kinds for a bad address
        raise ClusterError(f"Ray address {address!r}: {error}") from None
    if not resolved:
        raise ClusterError(f"Ray address {address!r}: no running Ray cluster found on this machine and "
                           "RAY_ADDRESS is not set; start one with `ray start --head` or name its address")
    return resolved


def connect(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Join the Ray cluster at ``address`` (host:port, ray://host:port or "auto").

    Raises ClusterError naming the address within ``timeout_s`` when it does not answer:
    ``ray.init`` on an address where nothing (or something else) listens waits forever.
    """
    import ray

    if ray.is_initialized():
        return
    target = address
    if not address.startswith("ray://"):
        target = _bootstrap_address(address)
        host, _, port = target.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=min(10.0, timeout_s)).close()
        except (OSError, ValueError) as error:
            raise ClusterError(f"Ray address {address!r} ({target}) does not answer: {error}") from None
    outcome: dict = {}

    def join() -> None:
        try:
            ray.init(address=target, log_to_driver=False, logging_level="ERROR")
        except Exception as error:   # noqa: BLE001 - reported below with the address
            outcome["error"] = error

    # A thread: something that accepts connections but is no Ray GCS makes ray.init hang.
    joiner = threading.Thread(target=join, daemon=True)
    joiner.start()
    joiner.join(timeout_s)
    if joiner.is_alive():
        raise ClusterError(f"Ray address {address!r} ({target}) accepted a connection but no Ray cluster "
                           f"answered within {timeout_s:.0f} s")
    if "error" in outcome:
        raise ClusterError(f"Ray address {address!r}: {outcome['error']}")


@contextmanager
def on_cluster(address: str) -> Iterator[None]:
    """Connected to the cluster inside the block; disconnected (the cluster keeps running) after."""
    import ray

    connect(address)
    try:
        yield
    finally:
        ray.shutdown()


def map_on_cluster(function: Callable, items: Iterable[tuple], num_cpus: float = 1, num_gpus: float = 0) -> Iterator[tuple[int, object]]:
    """(index, function(*item)) for each item, in the order they finish, computed by Ray tasks.

    Must be called connected (``on_cluster``). A task whose process or node dies is retried by Ray;
    an exception raised by ``function`` itself is not retried and is raised here.
    """
    import ray

    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=TASK_RETRIES)(function)
    limit = max(1, int(IN_FLIGHT_PER_CPU * ray.cluster_resources().get("CPU", 1) / max(num_cpus, 1e-3)))
    pending: dict = {}
    items = iter(enumerate(items))
    exhausted = False
    while pending or not exhausted:
        while not exhausted and len(pending) < limit:
            try:
                index, item = next(items)
            except StopIteration:
                exhausted = True
                break
            pending[remote.remote(*item)] = index
        if not pending:
            break
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            index = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as error:
                # The function's own error (e.g. a corrupt frame, named), not Ray's wrapping of it.
                raise (error.cause or error) from None
            yield index, result


def cluster_summary() -> dict:
    """The connected cluster's nodes and resources: what the admin page's workers panel shows."""
    import ray

    total, free = ray.cluster_resources(), ray.available_resources()
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    return {"nodes": len(nodes), "cpus": total.get("CPU", 0.0), "gpus": total.get("GPU", 0.0),
            "cpus_free": free.get("CPU", 0.0), "gpus_free": free.get("GPU", 0.0),
            "node_addresses": sorted(node.get("NodeManagerAddress", "") for node in nodes)}

