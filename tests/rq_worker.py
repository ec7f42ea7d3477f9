"""The RQ worker class that the tests' ``rqworker`` runs (``RQ["WORKER_CLASS"]`` in settings).

RQ's worker listens for commands (stop a job, shut down) on a pub/sub channel, in a
thread that waits up to 60 s for each message. On its way out it sends UNSUBSCRIBE and then
stops that thread, and redis-py's ``PubSubWorkerThread.stop()`` joins the thread without a
timeout (rq 3.0 expects a join of at most 1 s). When the thread reads the reply to
UNSUBSCRIBE before ``stop()`` has cleared its running flag, it goes round once more and
waits the full 60 s for a subscription that never comes, and the worker with it:
``rqworker --burst`` then exits a minute after its last job, about one run in two.
"""

from __future__ import annotations

from rq.worker import Worker as RQWorker

#: How long the command listener waits for a message before it looks whether to stop.
LISTEN_TIMEOUT_S = 1

__all__ = ["LISTEN_TIMEOUT_S", "PromptWorker"]


class PromptWorker(RQWorker):
    """RQ's worker, whose command listener stops within ``LISTEN_TIMEOUT_S`` when asked."""

    def subscribe(self) -> None:
        # RQ's own subscribe(), but for the listener's wait: 60 s there.
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        # RQ declares the attribute as None, which is all mypy infers from it.
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=LISTEN_TIMEOUT_S,
            daemon=True,
            exception_handler=self._pubsub_exception_handler,
        )
