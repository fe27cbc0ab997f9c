-- +goose Up
CREATE TABLE IF NOT EXISTS "user" (
    "id" text NOT NULL PRIMARY KEY,
    "name" text NOT NULL,
    "email" text NOT NULL UNIQUE,
    "emailVerified" boolean NOT NULL DEFAULT false,
    "image" text,
    "createdAt" timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE todos (
    id text PRIMARY KEY,
    user_id text NOT NULL REFERENCES "user"(id) ON DELETE CASCADE,
    title text NOT NULL,
    description text,
    is_complete boolean NOT NULL DEFAULT false,
    created_at timestamp NOT NULL,
    updated_at timestamp NOT NULL
);
CREATE INDEX ix_todos_user_id_created_at ON todos (user_id, created_at);
CREATE INDEX ix_todos_user_id ON todos (user_id);

CREATE TABLE chat_messages (
    id text PRIMARY KEY,
    user_id text NOT NULL,
    message text NOT NULL,
    response text NOT NULL,
    tool_calls text NOT NULL DEFAULT '[]',
    status text NOT NULL DEFAULT 'completed',
    created_at timestamp NOT NULL,
    updated_at timestamp NOT NULL
);
CREATE INDEX ix_chat_messages_user_id_created_at ON chat_messages (user_id, created_at);

CREATE TABLE user_seqs (
    user_id text PRIMARY KEY,
    seq integer NOT NULL
);
CREATE TABLE todo_events (
    user_id text NOT NULL,
    seq integer NOT NULL,
    type text NOT NULL,
    todo text NOT NULL,
    created_at timestamp NOT NULL,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX ix_todo_events_created_at ON todo_events (created_at);

-- +goose Down
DROP TABLE todo_events;
DROP TABLE user_seqs;
DROP TABLE chat_messages;
DROP TABLE todos;
