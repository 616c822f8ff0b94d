"""The pure model: the DeviceSession aggregate, its events and the lifecycle table.

No I/O, no clocks."""
