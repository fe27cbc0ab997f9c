-- POST /api/todos as store/postgres CreateTodo runs it (changeSQL): one statement
-- inserting the todo, bumping the user's seq and appending the event (the todo as JSON,
-- built by PostgreSQL), in one transaction. Same users as list.sql. pgbench reads
-- ":name" anywhere as a variable, so the time format's colons are chr(58) (immutable:
-- PostgreSQL folds the format to a constant when it plans the statement).
\set u random(1, :nusers)
WITH t AS (
	INSERT INTO todos (id, user_id, title, description, is_complete, created_at, updated_at)
	VALUES (gen_random_uuid(), 'BENCHREST' || lpad(:u::text, 23, '0'), 'made by the REST benchmark', 'made by the load tool', false, now(), now())
	RETURNING id, user_id, title, description, is_complete, created_at, updated_at),
s AS (
	INSERT INTO user_seqs (user_id, seq) SELECT t.user_id, 1 FROM t
	ON CONFLICT (user_id) DO UPDATE SET seq = user_seqs.seq + 1
	RETURNING seq),
e AS (
	INSERT INTO todo_events (user_id, seq, type, todo, created_at)
	SELECT t.user_id, s.seq, 'todo.created', jsonb_build_object(
		'id', t.id::text, 'user_id', t.user_id, 'title', t.title, 'description', t.description,
		'is_complete', t.is_complete,
		'created_at', to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24' || chr(58) || 'MI' || chr(58) || 'SS.US"Z"'),
		'updated_at', to_char(t.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24' || chr(58) || 'MI' || chr(58) || 'SS.US"Z"')),
		now()
	FROM t, s
	RETURNING seq)
SELECT t.id::text, t.user_id, t.title, t.description, t.is_complete, t.created_at, t.updated_at, e.seq FROM t, e;
