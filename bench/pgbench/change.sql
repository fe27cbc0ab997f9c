-- POST /api/todos as store/postgres CreateTodo runs it: one transaction inserting the
-- todo, bumping the user's seq and appending the event (the todo as JSON). Same users as
-- list.sql. pgbench reads ":name" anywhere as a variable, even in a string literal: the
-- JSON has a space after each colon and dots in its times (same size as Evo's).
\set u random(1, :nusers)
BEGIN;
INSERT INTO todos (id, user_id, title, description, is_complete, created_at, updated_at)
	VALUES (gen_random_uuid(), 'BENCHREST' || lpad(:u::text, 23, '0'), 'made by the REST benchmark', 'made by the load tool', false, now(), now())
	RETURNING id::text, user_id, title, description, is_complete, created_at, updated_at;
INSERT INTO user_seqs (user_id, seq) VALUES ('BENCHREST' || lpad(:u::text, 23, '0'), 1)
	ON CONFLICT (user_id) DO UPDATE SET seq = user_seqs.seq + 1
	RETURNING seq \gset
INSERT INTO todo_events (user_id, seq, type, todo, created_at)
	VALUES ('BENCHREST' || lpad(:u::text, 23, '0'), :seq, 'todo.created',
	'{"id": "938a7a06-fe90-401c-84b6-6438912d8ca6", "user_id": "BENCHREST00000000000000000000001", "title": "made by the REST benchmark", "description": "made by the load tool", "is_complete": false, "created_at": "2026-11-28T12.34.53.396076Z", "updated_at": "2026-11-28T12.34.53.396076Z"}',
	now());
COMMIT;
