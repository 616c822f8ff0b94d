"""pairgate's domain, in two layers.

- `domain.model`: the DeviceSession aggregate, its events and the lifecycle table. Pure:
  no I/O, no clocks; time and randomness come in as arguments.
- `domain.application`: the use cases that drive the model (client requests, engine
  reports, recovery, shutdown) and the ports (typing.Protocol) through which they reach
  the outside world. The event store is an eventsourcing Application whose persistence
  is chosen by configuration (adapters.store), so nothing here names a database.
"""
