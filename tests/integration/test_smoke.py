from __future__ import annotations

import threading

import job_machine as jm


def test_send_process_reply(dsn: str, client: jm.Client) -> None:
    class Echo(jm.Worker):
        def process(self, task: jm.Task) -> None:
            self.reply({"baz": task.data["foo"] + "!"})

    worker = Echo(dsn, queue="job.task", timeout=5)
    thread = threading.Thread(target=worker.receive)
    thread.start()
    try:
        tid = client.send({"foo": "Yeah"})
        assert client.wait(tid, timeout=10) == {"baz": "Yeah!"}
        assert client.check(tid)
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()
