"""Per-key event-time window features: declared in a features file, computed from a state
kept in Redis, before the model sees an event (``mmserve stream --features``).

- ``spec``: the features file (``features.yaml``), validated;
- ``windows``: the computation itself, pure: a batch of events and the state before it in,
  each event's features and the state it adds out;
- ``state``: that state's layout in Redis (a sorted set per key, members named by the
  events' entry ids, so adding one twice adds nothing).
"""
