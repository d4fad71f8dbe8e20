"""The durable job queue: enqueue, lease, complete, retry, dead-letter, replay.

Jobs live in the ops DB (``jobs``); workers (:class:`QueueWorker`, run by the Prefect flow
``flows/queue_worker.py`` or ``llmops jobs work``) claim them in batches under leases and
run them through the gateway core. No Prefect in here.
"""

from llmops.queue.callbacks import SIGNATURE_HEADER, sign, verify
from llmops.queue.jobs import JobNotFound, Submitted, enqueue, get_job
from llmops.queue.spec import JobSpec, PromptRef
from llmops.queue.store import JobStore
from llmops.queue.terminal import TerminalJob, record_terminal
from llmops.queue.worker import QueueWorker, WorkerStats, install_signal_handlers

__all__ = [
    "SIGNATURE_HEADER",
    "JobNotFound",
    "JobSpec",
    "JobStore",
    "PromptRef",
    "QueueWorker",
    "Submitted",
    "TerminalJob",
    "WorkerStats",
    "enqueue",
    "get_job",
    "install_signal_handlers",
    "record_terminal",
    "sign",
    "verify",
]
