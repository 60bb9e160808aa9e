-- 0005_queue: the durable at-least-once queue of modules/queue (docs/modules.md, "The
-- queue"). SQS semantics: a received message stays in the table, invisible until
-- `visible_at`; deleting it by its receipt handle acknowledges it.
--
-- * A message is visible when visible_at <= now(). Sending sets visible_at to now() plus
--   the delay; receiving moves it to now() plus the visibility timeout and draws a new
--   `receipt` token (a receipt handle names the message and that token, so a stale
--   handle cannot delete a message that someone else received since).
-- * Receiving picks the visible messages in (visible_at, seq) order with FOR UPDATE SKIP
--   LOCKED: messages whose visibility ran out go to the end of the line, as though new.
-- * A message received max_receives times is moved to the dead-letter queue (same
--   row, new queue_id) instead of being handed out again.
-- * FIFO queues order messages per group by `seq`; queue_dedup remembers deduplication
--   ids for 5 minutes.

CREATE TABLE queue (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                text NOT NULL UNIQUE
                        CHECK (name ~ '^[A-Za-z0-9_-]{1,80}$' OR name ~ '^[A-Za-z0-9_-]{1,75}\.fifo$'),
    fifo                boolean NOT NULL,
    visibility_timeout  integer NOT NULL DEFAULT 30 CHECK (visibility_timeout BETWEEN 0 AND 43200),
    delay_seconds       integer NOT NULL DEFAULT 0 CHECK (delay_seconds BETWEEN 0 AND 900),
    retention_seconds   integer NOT NULL DEFAULT 345600
                        CHECK (retention_seconds BETWEEN 60 AND 1209600),
    max_message_size    integer NOT NULL DEFAULT 262144
                        CHECK (max_message_size BETWEEN 1024 AND 262144),
    receive_wait_seconds integer NOT NULL DEFAULT 0 CHECK (receive_wait_seconds BETWEEN 0 AND 20),
    content_dedup       boolean NOT NULL DEFAULT false,
    dead_letter_queue   bigint REFERENCES queue (id) ON DELETE SET NULL,
    max_receives        integer CHECK (max_receives BETWEEN 1 AND 1000),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (fifo = (name LIKE '%.fifo'))
);
COMMENT ON TABLE queue IS 'Queues of modules/queue, with their SQS attributes.';
COMMENT ON COLUMN queue.max_receives IS
    'Receives after which a message goes to dead_letter_queue (both set, or no redrive).';

CREATE TABLE queue_message (
    id                  uuid PRIMARY KEY,
    queue_id            bigint NOT NULL REFERENCES queue (id) ON DELETE CASCADE,
    seq                 bigint GENERATED ALWAYS AS IDENTITY,
    body                text NOT NULL,
    attributes          jsonb,
    group_id            text,
    dedup_id            text,
    sent_at             timestamptz NOT NULL DEFAULT now(),
    visible_at          timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    receive_count       integer NOT NULL DEFAULT 0,
    first_received_at   timestamptz,
    receipt             uuid,
    source_queue        bigint
);
COMMENT ON TABLE queue_message IS
    'Messages not yet deleted: visible (visible_at <= now()), delayed or in flight.';
COMMENT ON COLUMN queue_message.source_queue IS
    'The queue a dead-lettered message came from (redrive moves it back there).';
CREATE INDEX queue_message_visible ON queue_message (queue_id, visible_at, seq);
CREATE INDEX queue_message_group ON queue_message (queue_id, group_id, seq)
    WHERE group_id IS NOT NULL;
CREATE INDEX queue_message_expires ON queue_message (expires_at);

CREATE TABLE queue_dedup (
    queue_id    bigint NOT NULL REFERENCES queue (id) ON DELETE CASCADE,
    dedup_id    text NOT NULL,
    message_id  uuid NOT NULL,
    seq         bigint NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (queue_id, dedup_id)
);
COMMENT ON TABLE queue_dedup IS
    'FIFO deduplication ids seen in the last 5 minutes, with the message they named.';
CREATE INDEX queue_dedup_expires ON queue_dedup (expires_at);
