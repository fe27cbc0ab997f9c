-- +goose Up
-- Every statement tolerates what already exists: Better Auth may own "user",
-- and a database that the Python backend used already has "todos" and
-- "chat_messages". Nothing here drops or rewrites a row.
CREATE TABLE IF NOT EXISTS "user" (
    "id" text NOT NULL PRIMARY KEY,
    "name" text NOT NULL,
    "email" text NOT NULL UNIQUE,
    "emailVerified" boolean NOT NULL DEFAULT false,
    "image" text,
    "createdAt" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS todos (
    id uuid PRIMARY KEY,
    user_id text NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    title varchar(500) NOT NULL,
    description varchar(2000),
    is_complete boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ix_todos_user_id_created_at ON todos (user_id, created_at);
CREATE INDEX IF NOT EXISTS ix_todos_user_id ON todos (user_id);

CREATE TABLE IF NOT EXISTS chat_messages (
    id uuid PRIMARY KEY,
    user_id text NOT NULL,
    message text NOT NULL,
    response text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE chat_messages ADD COLUMN IF NOT EXISTS tool_calls jsonb NOT NULL DEFAULT '[]';
ALTER TABLE chat_messages ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'completed';
CREATE INDEX IF NOT EXISTS ix_chat_messages_user_id_created_at ON chat_messages (user_id, created_at);

-- The per-user event log. user_seqs serializes seq allocation per user
-- (UPDATE ... RETURNING on one row) without a lock across users.
CREATE TABLE user_seqs (
    user_id text PRIMARY KEY,
    seq bigint NOT NULL
);
CREATE TABLE todo_events (
    user_id text NOT NULL,
    seq bigint NOT NULL,
    type text NOT NULL,
    todo jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX ix_todo_events_created_at ON todo_events (created_at);

-- +goose Down
DROP TABLE todo_events;
DROP TABLE user_seqs;
