"""Drives a real Weir server through a client generated from its OpenAPI document
(openapi-python-client): enqueue a job with a non-object payload, fetch it, ack it, read it
back, and list it with the optional query parameters. Prints one JSON line of what it saw."""

import json
import sys

sys.path.insert(0, sys.argv[1])
base = sys.argv[2]

from weir_generated import Client  # noqa: E402
from weir_generated.api.jobs import jobs_enqueue, jobs_list, jobs_show  # noqa: E402
from weir_generated.api.system import system_health  # noqa: E402
from weir_generated.api.work import work_ack, work_fetch  # noqa: E402
from weir_generated.models import (  # noqa: E402
    AckItem,
    AckRequest,
    EnqueueRequest,
    FetchRequest,
    NewJobBody,
)

client = Client(base_url=base, raise_on_unexpected_status=True)
health = system_health.sync(client=client)
enq = jobs_enqueue.sync(
    client=client,
    body=EnqueueRequest(jobs=[NewJobBody(queue="py", kind="hello", payload=[1, "two", None])]),
)
fetched = work_fetch.sync(client=client, body=FetchRequest(queues=["py"], max_=10, wait_ms=1000))
job = fetched.jobs[0]
acked = work_ack.sync(
    client=client,
    body=AckRequest(acks=[AckItem(id=job.id, lease_id=job.lease_id, result={"ok": True})]),
)
shown = jobs_show.sync(job.id, client=client)
page = jobs_list.sync(client=client, queue="py", state="completed", limit=5)
print(
    json.dumps(
        {
            "health": health.status,
            "ids": enq.ids,
            "fetched": [j.id for j in fetched.jobs],
            "payload": job.payload,
            "acked": acked.acked,
            "state": shown.state,
            "result": shown.result,
            "listed": [j.id for j in page.jobs],
        }
    )
)
