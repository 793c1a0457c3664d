"""Every Redis key this service uses, in one place (arq habit).

All keys share the ``atp:`` prefix so one Redis can host other data. Per-key inventory state
lives in a single hash (``INV``) of 64-byte packed records so a replica warms up with a few
HSCAN calls and one ``numpy.frombuffer``; buffered events and settlement lines live in two
lexicographically ordered sorted sets, so every script touches a fixed, declared set of keys.
For Redis Cluster these become N shards tagged by sku (see docs/scaling.md, issue 7).
"""

PREFIX = "atp:"
INV = PREFIX + "inv"  # hash  "sku|loc" -> packed record (inventory.FIELDS)
BUF = PREFIX + "buf"  # zset (lex) "sku|loc\0<seq:016>\0<event>": adjustments behind a gap
SETTLE = PREFIX + "settle"  # zset (lex) "sku|loc\0<erp_seq:016>\0<id>\0<qty>": unsettled lines
CHANGES = PREFIX + "changes"  # stream: one entry per atomic step, fields key -> record
EXPIRY = PREFIX + "expiry"  # zset reservation id -> hold expiry (ms)
# hash owner (API key id) -> units in its uncommitted cart holds; kept only while
# ATP_HOLD_QUOTA is set (each counted hold records its units in its own `quota_units` field)
HELD = PREFIX + "held"
RESERVATION = PREFIX + "res:"  # + reservation_id: hash (see lua/reserve.lua)
# ERP outbox, one zset per priority: member "r:<id>" (send reservation), "c:<id>" (cancel it
# at the ERP) or "g:<sku|loc>" (resync a key); score = not-before time in Redis ms (FIFO by
# enqueue time; a retry is re-scored into the future).
OUTBOX = PREFIX + "outbox:"  # + priority
INFLIGHT = PREFIX + "outbox:inflight"  # zset "<priority>|<member>" -> lease expiry (Redis ms)
ATTEMPTS = PREFIX + "outbox:attempts"  # hash member -> ERP calls made for it so far
ERP_NEXT = PREFIX + "erp:next"  # Redis ms before which no replica may call the ERP

CHANGES_MAXLEN = 200_000  # entries kept for replicas that briefly fall behind


def reservation(reservation_id: str) -> str:
    return RESERVATION + reservation_id


def outbox(priority: str) -> str:
    return OUTBOX + priority
