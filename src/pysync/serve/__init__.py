"""``pysync serve --workers N``: one process replicates, N processes serve HTTP.

supervisor.py  starts the engine (replication, shape logs) and the hub, runs the
               workers, restarts one that dies, takes them down when it stops
hub.py         the replicating side of the channel: shape requests of the
               workers, and an announcement for every append to a shape log
notify.py      the messages on that channel (a UNIX socket) and their framing
mirror.py      a worker's view of the shapes: logs followed read-only from disk,
               woken by the announcements (a ``ShapeSource`` for ``ShapeAPI``)
worker.py      an HTTP worker process: ShapeAPI on a MirrorEngine, on the
               listening socket it inherited
process.py     what every serving process runs (``pysync serve`` alone too): the
               event loop, uvicorn with the live path
"""
